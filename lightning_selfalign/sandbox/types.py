"""The sandbox's value types: limits in, a verdict out."""

from __future__ import annotations

from dataclasses import dataclass


class Verdict:
    """Verdict strings written to the ``verdict`` field."""

    PASS = "pass"  # the harness saw the module end normally after at least one completed assert
    FAIL = "fail"  # an assert failed
    ERROR = "error"  # another exception, a syntax error, or an exit before the tests finished
    TIMEOUT = "timeout"  # wall clock or CPU time ran out
    MEMORY = "memory"  # MemoryError under the memory cap
    CRASH = "crash"  # killed by a signal, or the sandbox itself failed (helper died)
    NO_TESTS = "no_tests"  # the module ran to the end but no assert in the tests ran
    POLICY = "policy"  # not run: the source does what no solution needs (``policy.py``; the reason names the rule)
    ALL = (PASS, FAIL, ERROR, TIMEOUT, MEMORY, CRASH, NO_TESTS, POLICY)


@dataclass(frozen=True)
class Limits:
    """Per-sample resource limits (all enforced inside the sandbox; the wall clock by the helper)."""

    timeout_s: float = 10.0
    memory_mb: int = 1024  # address space of each process
    processes: int = 32  # processes + threads of one sample
    file_size_mb: int = 16  # largest file it may write
    open_files: int = 256
    output_kb: int = 64  # stdout + stderr kept (the rest is drained and dropped)
    # The module's name: "main" as HumanEval's and EvalPlus's harnesses leave it (not "__main__"), so an
    # ``if __name__ == "__main__":`` block of a correct program (sys.exit(main()), input()) does not run first.
    run_as_main: bool = False
    # Refuse, before running, code and tests that reach for the harness's internals or the interpreter's (frames,
    # gc, tracing, ctypes, builtins, signal handlers, patched modules): ``policy.py``. Off here, for evaluations of
    # trusted benchmark tests; ``selfalign execute`` and the rounds' filter turn it on.
    policy: bool = False

    def __post_init__(self) -> None:
        problems = [
            f"{name}={getattr(self, name)!r} must be > 0"
            for name in self.__dataclass_fields__
            if name not in ("run_as_main", "policy") and not getattr(self, name) > 0
        ]
        if problems:
            raise ValueError("invalid sandbox limits: " + "; ".join(problems))


@dataclass
class ExecutionResult:
    """What one execution produced. ``output`` (stdout + stderr, capped) is not written to rows."""

    verdict: str
    reason: str
    tests_run: int
    duration_s: float
    output: str = ""
    cpu_s: float = 0.0  # CPU of the helper and the sample's processes (isolation overhead included)
    page_faults: int = 0  # minor page faults of the sample's processes (copy-on-write after the fork, mostly)

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.PASS

    def row_fields(self) -> dict:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "tests_run": self.tests_run,
            "duration_s": round(self.duration_s, 4),
        }
