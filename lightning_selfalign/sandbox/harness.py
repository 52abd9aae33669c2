"""What runs inside the sample process: ``code`` as a module (``main``, or ``__main__``), its ``tests`` after it in the
same namespace, then a report.

Standard library only: the helper loads this file by path, inside the sandbox. The report goes to a pipe
fd as one frame carrying a per-sample nonce the helper chose; the helper ignores anything without it, so
text the sample prints or writes to other fds cannot pass for a report. A pass needs the report, and the
report is written only after the module body returned normally: ``sys.exit``, ``os._exit``, ``atexit``,
``finally: os._exit(0)``, ``exec`` of another program, or a killed process all end before it. Only the sample's own
process reports, once (a process it forks ends silently), and only through the stream methods held before it ran.

The code is compiled on its own, as the module file ``main.py`` that the helper writes to the scratch dir (so
``inspect.getsource`` and multiprocessing's spawn find it), and must compile so: nothing of it can reach into the
tests (a trailing ``@decorator`` would otherwise wrap the tests' ``check``). The tests are compiled after it, from
their syntax tree, with every ``assert`` statement (also inside helper functions such as HumanEval's ``check``)
rewritten to bump a counter after it succeeds; nothing in the code is ever counted. Each ``unittest`` test method
that ran and passed counts as one check and each one that failed fails the sample (``unittest.main()`` ends the
module as it ends a script); TestCase classes that nothing ran (``unittest.main()`` under a ``__main__`` guard)
are run after the module. A run with zero checks is ``no_tests``.
"""

import builtins
import os
import sys
import types

CHECK_NAME = "__selfalign_check__"
# Bound now: a sample may rebind the builtins (``builtins.AssertionError = SystemExit``) before it fails.
_ASSERTION_ERROR, _MEMORY_ERROR, _SYSTEM_EXIT, _BASE_EXCEPTION = AssertionError, MemoryError, SystemExit, BaseException
FILENAME = "main.py"
TESTS_FILENAME = "<tests>"


def _counted(statements: list) -> list:
    """``statements`` with a call of the check counter after each assert.

    Walks statement lists only (asserts are statements; no expression can hold one): a generic ``NodeTransformer``
    visiting every expression node cost twice as much."""
    import ast  # here, not at the top: the forker (and so every sample) is ~0.5 MB smaller without it

    out: list[ast.stmt] = []
    for node in statements:
        out.append(node)
        if isinstance(node, ast.Assert):
            at = {"lineno": node.lineno, "col_offset": node.col_offset}
            at.update(end_lineno=node.end_lineno, end_col_offset=node.end_col_offset)
            out.append(ast.Expr(ast.Call(ast.Name(CHECK_NAME, ast.Load(), **at), [], [], **at), **at))
            continue
        for field in node._fields:
            value = getattr(node, field)
            if type(value) is not list or not value:
                continue
            if isinstance(value[0], ast.stmt):  # body, orelse, finalbody
                setattr(node, field, _counted(value))
            elif isinstance(value[0], (ast.excepthandler, ast.match_case)):  # their bodies hold statements
                for part in value:
                    part.body = _counted(part.body)
    return out


def normalized(text: str) -> str:
    """``text`` with every line break a ``\\n`` (Python reads a lone ``\\r`` as one too)."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def compile_code(code: str, filename: str = FILENAME, tree: object = None) -> types.CodeType:
    """The code as a module of its own (from ``tree``, its syntax tree, when the caller has one); code that only
    parses joined to the tests is an error, not a test run."""
    try:
        return compile(code if tree is None else tree, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise SyntaxError(f"the code does not compile on its own: {exc.msg} (line {exc.lineno})") from None


def future_flags(code: types.CodeType) -> int:
    """The ``__future__`` features the code turned on: they apply to the tests too (``from __future__ import
    annotations`` applies to the whole module it heads)."""
    import __future__

    return code.co_flags & sum(getattr(__future__, name).compiler_flag for name in __future__.all_feature_names)


def compile_tests(tree: object, code: types.CodeType) -> types.CodeType:
    """The tests' syntax tree (from ``ast.parse``), counted, compiled under the ``__future__`` features the code
    turned on; depends on nothing else of the code."""
    tree.body = _counted(tree.body)
    return compile(tree, TESTS_FILENAME, "exec", flags=future_flags(code), dont_inherit=True)


def instrument(
    code: str, tests: str, filename: str = FILENAME, trees: tuple = (None, None)
) -> tuple[types.CodeType, types.CodeType]:
    """(the code, the counted tests), compiled, from their syntax ``trees`` where the caller parsed them already (the
    tests' tree is rewritten); raises SyntaxError or ValueError as compile does."""
    import ast  # see _counted

    module = compile_code(normalized(code), filename, trees[0])
    return module, compile_tests(trees[1] or ast.parse(normalized(tests), TESTS_FILENAME), module)


def _where(exc: BaseException) -> str:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name == TESTS_FILENAME or name.endswith(FILENAME):
            line = f"{'tests' if name == TESTS_FILENAME else FILENAME} line {tb.tb_lineno}"
        tb = tb.tb_next
    return f" ({line})" if line else ""


def describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:
        text = "<str() of the exception failed>"
    return f"{type(exc).__name__}: {text}"[:1500] + _where(exc)


def classify(exc: BaseException) -> tuple[str, str]:
    """(verdict, reason) for an exception that ended the module early."""
    if isinstance(exc, _ASSERTION_ERROR):
        return "fail", describe(exc)
    if isinstance(exc, _MEMORY_ERROR):
        return "memory", describe(exc)
    if isinstance(exc, _SYSTEM_EXIT):
        return "error", f"SystemExit({exc.code!r}) before the tests finished{_where(exc)}"
    return "error", describe(exc)


def prepare_main(directory: str) -> types.ModuleType:
    """An empty ``__main__`` module for samples run in ``directory``, installed as this process's ``__main__``
    (with ``sys.argv``). The forker makes it once: each sample forked after gets its own untouched copy and need
    not build one (which copied ~50 pages per sample)."""
    module = types.ModuleType("__main__")
    module.__dict__.update({"__builtins__": builtins, "__file__": os.path.join(directory, FILENAME)})
    sys.modules["__main__"] = module
    sys.argv = [FILENAME]
    return module


def name_module(module: types.ModuleType, as_main: bool) -> None:
    """Run the sample as ``__main__`` or as ``main`` (registered under that name, so its classes pickle)."""
    if not as_main:
        module.__name__ = "main"
        sys.modules["main"] = module


class _UnitTests:
    """What ``unittest`` ran in this sample: test methods that passed while the tests part ran count as checks (the
    code's own cannot stand in for the tests), failed ones are kept wherever they ran.

    Installed only when ``unittest`` is loaded before the sample runs (the forker imports it for every source that
    names it), by wrapping ``TestResult``'s outcome methods and ``TestProgram.runTests`` in this process only."""

    def __init__(self, checks: list) -> None:
        self.failures: list = []
        self.ran = self.exited = self.counting = False
        self.unittest = sys.modules["unittest"]
        self._wrap(checks)

    def _wrap(self, checks: list) -> None:
        result, program, failures, state = self.unittest.TestResult, self.unittest.TestProgram, self.failures, self
        add_success, add_failure, add_error = result.addSuccess, result.addFailure, result.addError
        add_sub_test, add_unexpected, run_tests = result.addSubTest, result.addUnexpectedSuccess, program.runTests

        def addSuccess(result, test):
            state.ran = True
            checks[0] += state.counting
            return add_success(result, test)

        def addFailure(result, test, err):
            failures.append(("fail", test, err))
            return add_failure(result, test, err)

        def addError(result, test, err):
            failures.append(("error", test, err))
            return add_error(result, test, err)

        def addSubTest(result, test, subtest, err):
            if err is not None:
                failures.append(("fail" if issubclass(err[0], test.failureException) else "error", subtest, err))
            return add_sub_test(result, test, subtest, err)

        def addUnexpectedSuccess(result, test):
            failures.append(("fail", test, None))
            return add_unexpected(result, test)

        def runTests(program):
            state.ran = True
            try:
                return run_tests(program)
            except _SYSTEM_EXIT:
                state.exited = state.counting  # in the tests, unittest.main() ends the module as it ends a script
                raise

        result.addSuccess, result.addFailure, result.addError = addSuccess, addFailure, addError
        result.addSubTest, result.addUnexpectedSuccess, program.runTests = addSubTest, addUnexpectedSuccess, runTests

    def run_unran(self, module: types.ModuleType) -> None:
        """Run the TestCase classes the module defined when nothing ran any tests (a ``__main__`` guard held the
        ``unittest.main()`` back)."""
        unittest = self.unittest
        if self.ran:
            return
        name = module.__name__
        cases = [v for v in list(module.__dict__.values()) if isinstance(v, type) and issubclass(v, unittest.TestCase)
                 and v.__module__ == name]  # fmt: skip
        if cases:
            suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(case) for case in cases)
            unittest.TextTestRunner(stream=sys.__stderr__, verbosity=0).run(suite)

    def verdict(self) -> tuple[str, str] | None:
        """("fail" or "error", reason) for the first failed test, None when none failed."""
        if not self.failures:
            return None
        kind, test, err = self.failures[0]
        what = "unexpected success" if err is None else describe(err[1])
        return kind, f"unittest {test}: {what}"


def run(program: types.CodeType | tuple, nonce: str, fd: int, module: types.ModuleType | None = None) -> None:
    """Execute the sample ((code, tests) compiled, or (code, tests, filename) sources to compile here) in ``module``
    (from :func:`prepare_main`, made here if not given), report through ``fd``, end the process.

    Never returns."""
    write, exit_now, encode, getpid = os.write, os._exit, str.encode, os.getpid  # held before the sample runs
    # The streams and their type's flush, held: a sample may replace sys.stdout, or set a ``flush`` of its own on it,
    # which would then run inside the report.
    streams = [(type(stream).flush, stream) for stream in (sys.stdout, sys.stderr)]
    own_pid = getpid()
    checks = [0]

    def count_check() -> None:
        checks[0] += 1

    def report(status: str, reason: str) -> None:
        if getpid() != own_pid:  # a process the sample forked ends silently: only the sample itself reports
            exit_now(0)
        for flush, stream in streams:
            try:
                flush(stream)
            except BaseException:
                pass
        body = encode(reason, "utf-8", "backslashreplace")
        write(fd, encode(f"\nSELFALIGN-REPORT {nonce} {status} {checks[0]} {len(body)}\n") + body)
        exit_now(0)

    if isinstance(program[0], str):
        try:
            program = instrument(*program)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            report("error", describe(exc))
    if module is None:
        module = prepare_main(os.getcwd())
    module.__dict__[CHECK_NAME] = count_check
    units = _UnitTests(checks) if "unittest" in sys.modules else None  # the forker loaded it for this source
    try:
        exec(program[0], module.__dict__)
        if units is not None:
            units.counting = True
        exec(program[1], module.__dict__)
        if units is not None:
            units.run_unran(module)
    except _BASE_EXCEPTION as exc:
        try:
            if not (units is not None and units.exited and isinstance(exc, _SYSTEM_EXIT)):
                report(*classify(exc))
        except _BASE_EXCEPTION:
            report("error", "an exception that could not be described")
    if units is not None:
        try:
            failed = units.verdict()
        except _BASE_EXCEPTION:
            failed = ("error", "a unittest failure that could not be described")
        if failed:
            report(*failed)
    report("ok", "")
