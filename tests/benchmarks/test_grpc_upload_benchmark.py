"""benchmarks/grpc_upload.py, shortened: a 1 MiB request through a proxy that adds a 20 ms round trip."""

import json

import pytest

from benchmarks import grpc_upload


@pytest.mark.benchmark
def test_both_servers_take_a_mebibyte_across_a_20_ms_round_trip_in_about_one(tmp_path, capsys):
    """With zttp's own 64 KiB windows 1 MiB takes at least 16 round trips; with an answer held back by Nagle's
    algorithm until the client's delayed ACK, 40 ms more."""
    grpc_upload.main(["--megabytes", "1", "--rtt-ms", "0,20", "--calls", "2", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "grpc_upload.json").read_text())["rows"]
    assert [row["rtt_ms"] for row in rows] == [0.0, 20.0]
    delayed = rows[1]
    for server in grpc_upload.SERVERS:
        assert 0.020 <= delayed[server]["seconds"] < 2.5 * 0.020, server
    assert delayed["ratio"] == pytest.approx(delayed["grpcio"]["MiB_per_s"] / delayed["zttp"]["MiB_per_s"])
    assert (tmp_path / "grpc_upload.png").stat().st_size > 0
    assert "grpcio's upload rate / zttp's:" in capsys.readouterr().out


def test_bad_arguments_are_refused_with_what_is_expected(capsys):
    with pytest.raises(SystemExit):
        grpc_upload.parse_args(["--rtt-ms", "0,-1"])
    assert "every --rtt-ms at least 0" in capsys.readouterr().err
