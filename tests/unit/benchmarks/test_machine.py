"""The machine record and line every benchmark prints."""

import os

from machine import machine, machine_line


def test_the_record_holds_the_cpus_and_both_load_averages_rounded():
    record = machine(0.123, 1.987)
    assert record["cpus"] == os.cpu_count() and record["load_before"] == 0.12 and record["load_after"] == 1.99
    line = machine_line(record, "server threads 1")
    assert line.startswith(f"machine: {record['machine']}, {os.cpu_count()} CPUs, Python {record['python']}, ")
    assert line.endswith("server threads 1; load average 0.12 before, 1.99 after")
    assert "server threads" not in machine_line(record)
