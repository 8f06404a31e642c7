"""bench/compare.py runs end to end: it starts chunkd and @tus/server, runs a tus workload and a native
Files API workload on both, and reports figures that parse (the full comparison is run by hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.compare import node_ready

from tests.support.s3 import in_ci

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_comparison_reports_every_figure(tmp_path: Path) -> None:
    if (missing := node_ready()) is not None:
        if in_ci():
            pytest.fail(f"{missing}: scripts/test-deps.sh must install it in CI")
        pytest.skip(missing)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "compare.py"),
            "--quick",
            "--rounds",
            "1",
            "--no-floors",
            "--only",
            "tus-256k,small-native-1",
            "--json",
            str(report),
            "--work-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    document = json.loads(report.read_text())
    assert document["rounds"] == 1
    by_name = {w["name"]: w for w in document["workloads"]}
    assert set(by_name) == {"tus-256k", "small-native-1"}
    for workload in by_name.values():
        assert workload["peer"] == "@tus/server"
        assert set(workload["medians"]) == {"chunkd", "@tus/server"}
        assert [run["target"] for run in workload["runs"]] == ["chunkd", "@tus/server"]
        assert len(workload["round_ratios"]) == 1 and workload["round_ratios"][0] > 0
        for run in workload["runs"]:
            assert run["value"] > 0 and run["requests"] > 0
            assert run["server_cpu_s"] > 0, "the server's CPU time comes from /proc"
            assert run["peak_rss_mib"] > 10, "the server's RSS is sampled"
    # 2 MiB in 256 KiB PATCHes: 8 PATCHes and the creation; 32 files as create + part + complete.
    assert [r["requests"] for r in by_name["tus-256k"]["runs"]] == [9, 9]
    assert by_name["small-native-1"]["runs"][0]["requests"] == 96
    table = result.stdout.splitlines()
    assert any(line.startswith("| tus-256k:") and "@tus/server" in line for line in table)
    assert any(line.startswith("| small-native-1:") for line in table)
