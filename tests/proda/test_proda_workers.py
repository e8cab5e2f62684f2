"""--num_workers unset: the reference's 6, or fewer on a machine with fewer CPUs; set: as given."""
import pytest

from proda import options
from proda.options import parse_opt


@pytest.mark.parametrize("cpus, workers", [(2, 2), (1, 1), (6, 6), (64, 6)])
def test_the_default_follows_the_machine_up_to_the_references_six(monkeypatch, cpus, workers):
    monkeypatch.setattr(options, "available_cpus", lambda: cpus)
    assert parse_opt([]).num_workers == workers
    assert parse_opt([], entry="test").num_workers == workers


def test_a_given_value_is_kept(monkeypatch, tmp_path):
    monkeypatch.setattr(options, "available_cpus", lambda: 2)
    assert parse_opt(["--num_workers", "6"]).num_workers == 6
    assert parse_opt(["--num_workers=0"]).num_workers == 0
    assert parse_opt(["--num_w", "5"]).num_workers == 5  # argparse's abbreviation counts as given
    config = tmp_path / "c.py"
    config.write_text("num_workers = 8\n")
    assert parse_opt(["--config", str(config)]).num_workers == 8
    assert parse_opt(["--config", str(config), "--num_workers", "3"]).num_workers == 3


def test_available_cpus_is_a_positive_count():
    assert options.available_cpus() >= 1
