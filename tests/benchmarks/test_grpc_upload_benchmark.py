"""benchmarks/grpc_upload.py, shortened: a 1 MiB request through a proxy that adds a 4 ms round trip."""

import json

import pytest

from benchmarks import grpc_upload


@pytest.mark.benchmark
def test_zttps_64_kib_windows_cost_a_round_trip_per_window_and_grpcios_do_not(tmp_path, capsys):
    grpc_upload.main(["--megabytes", "1", "--rtt-ms", "0,4", "--calls", "1", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "grpc_upload.json").read_text())["rows"]
    assert [row["rtt_ms"] for row in rows] == [0.0, 4.0]
    delayed = rows[1]
    # 1 MiB through 64 KiB windows is at least 16 round trips; grpcio's grown windows take it in a few.
    assert delayed["zttp"]["seconds"] >= 15 * 0.004
    assert delayed["grpcio"]["seconds"] < delayed["zttp"]["seconds"] / 3
    assert delayed["ratio"] == pytest.approx(delayed["grpcio"]["MiB_per_s"] / delayed["zttp"]["MiB_per_s"])
    assert (tmp_path / "grpc_upload.png").stat().st_size > 0
    assert "grpcio's upload rate / zttp's:" in capsys.readouterr().out


def test_bad_arguments_are_refused_with_what_is_expected(capsys):
    with pytest.raises(SystemExit):
        grpc_upload.parse_args(["--rtt-ms", "0,-1"])
    assert "every --rtt-ms at least 0" in capsys.readouterr().err
