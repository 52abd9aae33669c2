"""The code policy: what a generated solution (or its tests) never needs to do, refused from the syntax tree before
anything runs, as the verdict ``policy`` with the rule that fired.

Why: a model trained on what its own filter keeps learns whatever gets through it. A sample that walks frames or
``gc`` to the harness's report, traces the interpreter, reads memory with ``ctypes``, rebinds builtins, installs
signal handlers, patches the modules the tests use, or returns an object equal to everything can forge or bend a
verdict from inside the one process the harness shares with it. No solution to a programming task needs any of it.

The rules (``RULES``) look at names, attributes, imports and string constants, so they also catch
``getattr(obj, "f_back")``; they cannot see names built at run time (``getattr(sys, "_get" + "frame")``,
``__import__`` of a computed string, ``exec`` of generated source): the policy narrows what gets through, the
isolation is the boundary. The cost: correct programs that really use ``signal``, ``ctypes``, ``gc``,
``inspect.stack()`` or assign to an imported module's attribute are refused, and so kept out of training data.
That is why it is on for ``selfalign execute`` and the rounds' filter and off by default for evaluations, whose
tests are trusted and whose samples should be scored as they are.

Standard library only: the helper loads this file by path, like ``supervision.py``, and it is importable on the
host for tests.
"""

import ast

RULES = {
    "frames": "reads interpreter frames (sys._getframe, inspect frames, f_back, tb_frame, ...)",
    "gc": "uses the garbage collector's object lists (gc)",
    "tracing": "installs a trace or profile hook (settrace, setprofile, sys.monitoring)",
    "ctypes": "reaches raw memory (ctypes, /proc/*/mem)",
    "builtins": "changes the builtins",
    "signal": "installs signal handlers or timers",
    "patches_module": "assigns to or deletes an attribute of an imported module",
    "always_equal": "defines __eq__ that is always true (or __ne__ always false)",
    "harness": "names the harness's internals",
}
FRAME_ATTRIBUTES = frozenset(
    "_getframe _current_frames f_back f_globals f_locals f_builtins f_code f_trace tb_frame gi_frame cr_frame "
    "ag_frame gi_yieldframe currentframe getouterframes getinnerframes".split()
)
INSPECT_FRAME_FUNCTIONS = frozenset("stack trace currentframe getouterframes getinnerframes getframeinfo".split())
TRACING = frozenset("settrace setprofile monitoring".split())
SIGNAL_FUNCTIONS = frozenset("signal alarm setitimer set_wakeup_fd sigwait sigwaitinfo sigtimedwait".split())
BANNED_MODULES = {"gc": "gc", "ctypes": "ctypes", "_ctypes": "ctypes", "cffi": "ctypes", "_testcapi": "ctypes"}
# Assigned by ordinary programs and tests (capturing printed output, setting arguments): not patching.
ORDINARY_ATTRIBUTES = {"sys": frozenset("stdout stderr stdin argv path".split())}


NAMES = FRAME_ATTRIBUTES | TRACING | {"__builtins__"}  # the names ``name`` looks at (and any holding "selfalign")
_LEAVES = frozenset(("ctx", "op"))  # fields whose nodes hold nothing the rules look at
MUTATORS = frozenset("update pop setdefault clear popitem __setitem__ __delitem__".split())


class _Finder:
    """``visit`` each syntax tree, then ``resolve`` the checks that need to know which names are modules; ``found``
    holds (line, rule, detail) of each rule broken."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str, str]] = []  # (line, rule, detail)
        self.modules: dict[str, str] = {}  # name bound by ``import`` -> the module it names
        self.on_names: list[tuple[str, ast.AST]] = []  # (name, node): attributes, calls and subscripts of a name

    def fire(self, rule: str, detail: str, node: ast.AST) -> None:
        line = getattr(node, "lineno", 0)
        self.found.append((line, rule, f"{detail} (line {line})"))

    def visit(self, tree: ast.AST) -> None:
        """Every node of ``tree`` but the contexts and operators (a stack, not ``ast.walk``: half the time)."""
        stack, handlers = [tree], self.handlers
        while stack:
            node = stack.pop()
            handler = handlers.get(type(node))
            if handler is not None:
                handler(node)
            for field in node._fields:
                value = getattr(node, field, None)
                if type(value) is list:
                    stack.extend(item for item in value if isinstance(item, ast.AST))
                elif isinstance(value, ast.AST) and field not in _LEAVES:
                    stack.append(value)

    @property
    def handlers(self) -> dict:
        return {
            ast.Attribute: self.attribute,
            ast.Name: lambda node: self.name(node.id, node),
            ast.Constant: lambda node: type(node.value) is str and self.string(node.value, node),
            ast.Import: self.imports,
            ast.ImportFrom: self.imports,
            ast.Call: self.call,
            ast.Subscript: self.subscript,
            ast.FunctionDef: self.function,
            ast.AsyncFunctionDef: self.function,
            ast.Assign: self.assign,
        }

    def attribute(self, node: ast.Attribute) -> None:
        self.name(node.attr, node)
        root = node.value
        while type(root) is ast.Attribute and not isinstance(node.ctx, ast.Load):  # os.path.exists = ...
            root = root.value
        if type(root) is ast.Name:
            self.on_names.append((root.id, node))

    def subscript(self, node: ast.Subscript) -> None:
        if not isinstance(node.ctx, ast.Load) and _is_sys_modules(node.value):
            self.fire("patches_module", "sys.modules[...]", node)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.name(node.name, node)
        if node.name in ("__eq__", "__ne__"):
            self.equality(node.name, [n.value for n in ast.walk(node) if isinstance(n, ast.Return)], node)

    def assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            if isinstance(target, ast.Name) and isinstance(node.value, ast.Lambda):
                self.equality(target.id, [node.value.body], node)

    def resolve(self) -> None:
        """The checks on uses of module names, once every import of the code and the tests is known."""
        for name, node in self.on_names:
            module = self.modules.get(name)
            if module is not None:
                self.module_use(name, module, node)

    def name(self, name: str, node: ast.AST) -> None:
        if name not in NAMES and "align" not in name.lower():
            return
        if name == "__builtins__":
            self.fire("builtins", "__builtins__", node)
        elif "selfalign" in name.lower():
            self.fire("harness", name, node)
        elif name in FRAME_ATTRIBUTES:
            self.fire("frames", name, node)
        elif name in TRACING:
            self.fire("tracing", name, node)

    def module_use(self, name: str, module: str, node: ast.AST) -> None:
        """An attribute of, or a setattr/delattr/vars call on, a name that an ``import`` bound to ``module``."""
        if isinstance(node, ast.Call):
            called, args = node.func.id, node.args
            attribute = args[1].value if len(args) > 1 and isinstance(args[1], ast.Constant) else "?"
            if module == "builtins":
                self.fire("builtins", f"{called}({name}, ...)", node)
            elif called != "vars" and attribute not in ORDINARY_ATTRIBUTES.get(module, ()):
                self.fire("patches_module", f"{called}({name}, {attribute!r}) (module {module})", node)
            return
        attr, stored = node.attr, not isinstance(node.ctx, ast.Load)
        if type(node.value) is not ast.Name:  # a store into a module's module (os.path.exists = ...)
            attr = ast.unparse(node)[len(name) + 1 :]
        if module == "inspect" and attr in INSPECT_FRAME_FUNCTIONS:
            self.fire("frames", f"inspect.{attr}", node)
        elif module == "signal" and attr in SIGNAL_FUNCTIONS:
            self.fire("signal", f"signal.{attr}", node)
        elif module == "builtins" and (stored or attr == "__dict__"):
            self.fire("builtins", f"{name}.{attr}", node)
        elif stored and attr not in ORDINARY_ATTRIBUTES.get(module, ()):
            self.fire("patches_module", f"{name}.{attr} (module {module})", node)

    def string(self, text: str, node: ast.AST) -> None:
        if text in FRAME_ATTRIBUTES:
            self.fire("frames", repr(text), node)
        elif text in TRACING and text != "monitoring":
            self.fire("tracing", repr(text), node)
        elif "selfalign" in text.lower():
            self.fire("harness", "a string naming selfalign", node)
        elif text.startswith("/proc/") and text.endswith("/mem"):
            self.fire("ctypes", repr(text), node)

    def imports(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self.module(alias.name, node)
                top = alias.name.split(".")[0]
                self.modules[alias.asname or top] = alias.name if alias.asname else top
            return
        module = node.module or ""
        self.module(module, node)
        for alias in node.names:
            if module == "inspect" and alias.name in INSPECT_FRAME_FUNCTIONS:
                self.fire("frames", f"from inspect import {alias.name}", node)
            elif module == "signal" and alias.name in SIGNAL_FUNCTIONS:
                self.fire("signal", f"from signal import {alias.name}", node)
            elif module == "sys" and alias.name == "modules":
                self.fire("patches_module", "from sys import modules", node)
            else:
                self.name(alias.name, node)

    def module(self, name: str, node: ast.AST) -> None:
        rule = BANNED_MODULES.get(name.split(".")[0])
        if rule is not None:
            self.fire(rule, f"import {name}", node)
        elif name == "builtins" and not isinstance(node, ast.Import):
            self.fire("builtins", "builtins imported by name", node)

    def call(self, node: ast.Call) -> None:
        func, args = node.func, node.args
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        first = args[0] if args else None
        if called in ("__import__", "import_module") and isinstance(first, ast.Constant) and type(first.value) is str:
            self.module(first.value, node)
        elif called in ("setattr", "delattr", "vars") and isinstance(func, ast.Name) and isinstance(first, ast.Name):
            self.on_names.append((first.id, node))
        elif called in MUTATORS and isinstance(func, ast.Attribute) and _is_sys_modules(func.value):
            self.fire("patches_module", f"sys.modules.{called}", node)

    def equality(self, name: str, returned: list, node: ast.AST) -> None:
        if name not in ("__eq__", "__ne__") or not returned:
            return
        always = name == "__eq__"
        if all(isinstance(value, ast.Constant) and value.value is always for value in returned):
            self.fire("always_equal", f"{name} always returns {always}", node)


def _is_sys_modules(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "modules"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def parse(code: str, tests: str) -> tuple[ast.Module | None, ast.Module | None]:
    """The syntax trees of the code and the tests (None for one that does not parse: compiling it then fails on its
    own), to check here and then to compile (``harness.instrument`` takes them), parsed once."""
    trees = []
    for source in (code, tests):
        try:
            trees.append(ast.parse(source))
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            trees.append(None)
    return trees[0], trees[1]


def violations(code: str, tests: str = "", trees: tuple | None = None) -> list[tuple[str, str]]:
    """Every (rule, detail) the code and tests (or their ``trees``, from :func:`parse`) break; empty when none."""
    finder = _Finder()
    for tree in trees or parse(code, tests):
        if tree is not None:
            finder.visit(tree)
    finder.resolve()
    return [(rule, detail) for _, rule, detail in sorted(finder.found, key=lambda found: found[0])]


def check(code: str, tests: str = "", trees: tuple | None = None) -> str | None:
    """The reason for the ``policy`` verdict (the first rule broken and where), or None when the source is allowed."""
    found = violations(code, tests, trees)
    if not found:
        return None
    rule, detail = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{rule}: {RULES[rule]}: {detail}{more}"
