"""``lorakit serve``: options and one-line errors (the server itself is tested over HTTP)."""

from __future__ import annotations

import pytest

from lorakit.cli.main import build_parser, main


def test_options_parse():
    args = build_parser().parse_args(["serve", "smollm2", "--adapters", "ad", "--max-loaded", "4", "--port", "9000",
                                      "--api-key", "k"])
    assert (args.model, args.adapters, args.max_loaded, args.port, args.api_key, args.host) == \
        ("smollm2", "ad", 4, 9000, "k", "127.0.0.1")


@pytest.mark.parametrize("argv,message", [
    (["serve", "smollm2", "--adapters", "/no/such/folder"], "adapters folder not found"),
    (["serve", "smollm2", "--adapters", ".", "--port", "70000"], "--port"),
])
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_bad_numbers_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "smollm2", "--adapters", ".", "--max-loaded", "0"])
    assert "positive integer" in capsys.readouterr().err
