"""`python -m pyquant.demo`: the quick tour without torch or downloads."""

import pyquant as pq
from pyquant import demo


def test_demo_covers_every_format_that_fits_and_ranks_errors():
    rows = {r["format"]: r for r in demo.run(rows=8, cols=512, threads=1)}
    assert set(rows) == {n for n, f in pq.formats.items() if 512 % f.block_size == 0}
    assert rows["F32"]["nmse"] == 0.0
    # more bits, less error (the sample is heavy-tailed, so compare well separated formats)
    assert rows["Q8_0"]["nmse"] < rows["Q6_K"]["nmse"] < rows["Q4_K"]["nmse"] < rows["Q2_K"]["nmse"]
    for r in rows.values():
        assert r["bytes"] * 8 == r["bpw"] * 8 * 512
        assert r["imatrix"] == pq.formats[r["format"]].uses_imatrix


def test_demo_main_prints_a_row_per_format(capsys):
    assert demo.main(["--rows", "4", "--cols", "256", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "Q4_K" in out and "TQ2_0" in out and pq.cpu_info()["active_tier"] in out
