"""What failed in a Snakemake run, in the failing jobs' own words (the Snakefile's `onerror`).

Snakemake's console ends a failed run with "check log file(s) for error details": the stage's one-line error sits
in the rule's log file. `explain(main_logs)` reads Snakemake's main log for its "Error in rule" blocks and quotes,
per failed job, the stage's `error: ...` lines (pipeline.cli prints a user mistake as one such line), else the
last exception line of a traceback, else the log's last lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

_ERROR_IN_RULE = re.compile(r"^Error in rule (\S+):\s*$")
_JOB_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):\s*$")
_FIELD = re.compile(r"^\s{4}(\w+): (.*)$")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Failed|Mismatch)): .+")
TAIL_LINES = 5


@dataclass
class Failure:
    rule: str
    wildcards: str = ""
    logs: list[str] = field(default_factory=list)


def failures(main_log: str | Path) -> list[Failure]:
    """The failed jobs of one run, from Snakemake's main log (`.snakemake/log/*.snakemake.log`). An error block names
    the job by its id; the job's start block ("rule X:") holds its wildcards."""
    found: list[Failure] = []
    wildcards: dict[str, str] = {}  # jobid → wildcards, from the start blocks
    block: dict[str, str] | None = None
    current: Failure | None = None

    def close() -> None:
        if block is not None and current is None and "jobid" in block:
            wildcards[block["jobid"]] = block.get("wildcards", "")
        if current is not None:
            current.wildcards = wildcards.get(block.get("jobid", ""), "") if block else ""

    for line in Path(main_log).read_text(errors="replace").splitlines():
        item = _FIELD.match(line)
        if item is not None and block is not None:
            key, value = item.groups()
            block[key] = value.strip()
            if current is not None and key == "log":
                paths = value.split(" (check log file")[0]
                current.logs = [p.strip() for p in paths.split(",") if p.strip()]
            continue
        if line.startswith(" ") and block is not None:
            continue  # a multi-line field (shell:)
        close()
        block, current = None, None
        if head := _ERROR_IN_RULE.match(line):
            current = Failure(head.group(1))
            found.append(current)
            block = {}
        elif head := _JOB_START.match(line):
            block = {}
    close()
    return found


def error_lines(log: Path) -> list[str]:
    """The lines of a job's log that say what went wrong."""
    lines = [x.rstrip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    said = [x for x in lines if x.startswith("error: ")]
    if said:
        return said
    raised = [x for x in lines if _EXCEPTION.match(x)]
    return raised[-1:] if raised else lines[-TAIL_LINES:]


def explain(main_logs: Iterable[str | Path], workdir: str | Path = ".") -> str:
    """One paragraph per failed job: the rule (and wildcards), its error lines, the log they come from."""
    out = []
    for main_log in main_logs:
        if not Path(main_log).is_file():
            continue
        for failure in failures(main_log):
            job = f"{failure.rule} ({failure.wildcards})" if failure.wildcards else failure.rule
            quoted = []
            for name in failure.logs:
                path = Path(workdir) / name
                if path.is_file():
                    quoted += [f"    {x}" for x in error_lines(path)] + [f"    (log: {name})"]
            out.append(f"failed: {job}" + ("\n" + "\n".join(quoted) if quoted else " (no log file)"))
    return "\n".join(out)
