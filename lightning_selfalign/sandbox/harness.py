"""What runs inside the sample process: ``code`` + ``tests`` as one module (``main``, or ``__main__``), then a report.

Standard library only: the helper loads this file by path, inside the sandbox. The report goes to a pipe
fd as one frame carrying a per-sample nonce the helper chose; the helper ignores anything without it, so
text the sample prints or writes to other fds cannot pass for a report. A pass needs the report, and the
report is written only after the module body returned normally: ``sys.exit``, ``os._exit``, ``atexit``,
``finally: os._exit(0)``, ``exec`` of another program, or a killed process all end before it.

Checks are counted by rewriting every ``assert`` statement in the *tests* part (also inside helper
functions such as HumanEval's ``check``) to bump a counter after it succeeds; a run with zero completed
asserts is ``no_tests``.
"""

import builtins
import os
import re
import sys
import types

CHECK_NAME = "__selfalign_check__"
# Bound now: a sample may rebind the builtins (``builtins.AssertionError = SystemExit``) before it fails.
_ASSERTION_ERROR, _MEMORY_ERROR, _SYSTEM_EXIT, _BASE_EXCEPTION = AssertionError, MemoryError, SystemExit, BaseException
FILENAME = "main.py"
_ONLY_AST = 0x400  # ast.PyCF_ONLY_AST, without importing ast into the forker (see _counted)
_ASSERT_LINE = re.compile(r"[ \t]*assert\b")


def _counted(statements: list, first_line: int) -> list:
    """``statements`` with a call of the check counter after each assert at or below ``first_line`` (the tests part).

    Walks statement lists only (asserts are statements; no expression can hold one), and skips statements that end
    before the tests part: a generic ``NodeTransformer`` visiting every expression node cost twice as much."""
    import ast  # here, not at the top: the forker (and so every sample) is ~0.5 MB smaller without it

    out: list[ast.stmt] = []
    for node in statements:
        out.append(node)
        if node.end_lineno < first_line:
            continue
        if isinstance(node, ast.Assert):
            if node.lineno >= first_line:
                at = {"lineno": node.lineno, "col_offset": node.col_offset}
                at.update(end_lineno=node.end_lineno, end_col_offset=node.end_col_offset)
                out.append(ast.Expr(ast.Call(ast.Name(CHECK_NAME, ast.Load(), **at), [], [], **at), **at))
            continue
        for field in node._fields:
            value = getattr(node, field)
            if type(value) is not list or not value:
                continue
            if isinstance(value[0], ast.stmt):  # body, orelse, finalbody
                setattr(node, field, _counted(value, first_line))
            elif isinstance(value[0], (ast.excepthandler, ast.match_case)):  # their bodies hold statements
                for part in value:
                    part.body = _counted(part.body, first_line)
    return out


def _counted_by_lines(code: str, tests: str) -> str | None:
    """``code + tests`` with the check counter called right after every assert of the tests, by appending the call
    to each assert's line; None when that cannot be known to be exact, and the syntax tree must decide.

    Exact when every ``assert`` of the tests starts its own line and the line holds nothing after it that the call
    could land in or change: no comment, no ``;``, no open bracket (``;`` inside one does not compile, and the
    caller then takes the tree path). No line of the tests may start inside a string: the tests hold no triple
    quote, backslash continuation or carriage return, and the code does not end in a backslash (a string the code
    leaves open otherwise fails to compile either way). Cheaper than the tree path, which builds and walks a
    Python syntax tree (0.24 against 0.32-0.55 ms per HumanEval program, measured side by side)."""
    if '"""' in tests or "'''" in tests or "\\\n" in tests or "\r" in tests or code.endswith("\\"):
        return None
    lines = tests.split("\n")
    for index, line in enumerate(lines):
        if "assert" not in line or line.lstrip(" \t").startswith("#"):  # a comment line stays as it is
            continue
        if _ASSERT_LINE.match(line) is None or "#" in line or ";" in line:
            return None  # an assert that does not start its line, or a line where the call could go astray
        lines[index] = line + "; " + CHECK_NAME + "()"
    return code + "\n" + "\n".join(lines)


def standalone(code: str, tests: str) -> tuple[str, str]:
    """``code`` and ``tests`` with every line break a ``\\n`` (Python reads a lone ``\\r`` as one too, and the
    counter must know where the tests start), once the code is known to compile as a module of its own: code
    that only parses joined to the tests (a trailing ``@decorator`` that would wrap the tests' ``check``) is an
    error, not a test run."""
    code, tests = _newlines(code), _newlines(tests)
    try:
        compile(code, FILENAME, "exec", _ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        raise SyntaxError(f"the code does not compile on its own: {exc.msg} (line {exc.lineno})") from None
    return code, tests


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def instrument(code: str, tests: str) -> types.CodeType:
    """Compile code + tests as one module with counted asserts; raises SyntaxError as compile does."""
    code, tests = standalone(code, tests)
    counted = _counted_by_lines(code, tests)
    if counted is not None:
        try:
            return compile(counted, FILENAME, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            pass  # the tree path gives the error as it stands in the sample's own source
    return instrument_by_tree(code, tests)


def instrument_by_tree(code: str, tests: str) -> types.CodeType:
    """``instrument`` through the syntax tree: exact for any source."""
    import ast  # see _counted

    source = code + "\n" + tests
    tree = ast.parse(source, FILENAME)
    tree.body = _counted(tree.body, first_line=code.count("\n") + 2)
    return compile(tree, FILENAME, "exec", dont_inherit=True)


def _where(exc: BaseException) -> str:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (main.py line {line})" if line else ""


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


def run(program: types.CodeType | tuple[str, str], nonce: str, fd: int, module: types.ModuleType | None = None) -> None:
    """Execute the sample (compiled, or (code, tests) to compile here) in ``module`` (from :func:`prepare_main`,
    made here if not given), report through ``fd``, end the process.

    Never returns."""
    write, exit_now, encode, getpid = os.write, os._exit, str.encode, os.getpid  # held before the sample runs
    own_pid = getpid()
    checks = [0]

    def count_check() -> None:
        checks[0] += 1

    def report(status: str, reason: str) -> None:
        if getpid() != own_pid:  # a process the sample forked ends silently: only the sample itself reports
            exit_now(0)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        body = encode(reason, "utf-8", "backslashreplace")
        write(fd, encode(f"\nSELFALIGN-REPORT {nonce} {status} {checks[0]} {len(body)}\n") + body)
        exit_now(0)

    if isinstance(program, tuple):
        try:
            program = instrument(*program)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            report("error", describe(exc))
    if module is None:
        module = prepare_main(os.getcwd())
    module.__dict__[CHECK_NAME] = count_check
    try:
        exec(program, module.__dict__)
    except _BASE_EXCEPTION as exc:
        try:
            report(*classify(exc))
        except _BASE_EXCEPTION:
            report("error", "an exception that could not be described")
    report("ok", "")
