"""Write one benchmark's section of `bench/RESULTS.md`, leaving the other sections untouched."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

from autohas_edge.server.demo.report import markdown_table

__all__ = ["machine_description", "markdown_table", "write_section"]

RESULTS = Path(__file__).with_name("RESULTS.md")
_HEADER = (
    "# Benchmark results\n\nEach section is written by the command it names; rerun it to refresh.\n"
)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return cpu


def machine_description() -> str:
    """One line naming the machine: CPU model, cores, memory, and GPU if any."""
    cpu = cpu_model()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, Python {platform.python_version()}"
    )


def write_section(name: str, command: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section `name` with `body`, stamped with command, machine and date."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- BEGIN {name} -->\n## {name}\n\n"
        f"- command: `{command}`\n- machine: {machine_description()}\n- date: {stamp}\n\n"
        f"{body.strip()}\n<!-- END {name} -->\n"
    )
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(
        rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->\n?", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
