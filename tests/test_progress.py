"""Progress when output is not a terminal: plain lines every ~10% or 30 s, with done/total, rate and ETA."""

from harness.report import display
from harness.report.display import PlainProgress


def test_plain_progress_prints_a_line_per_tenth_and_after_30_seconds():
    now, lines = [0.0], []
    advance = PlainProgress("lora: predict", 200, clock=lambda: now[0], write=lines.append)
    advance(0)                      # resumed with nothing done: the rate counts from here
    for _ in range(100):            # 1 example per second: 100 s for the first half
        now[0] += 1.0
        advance(1)
    assert [line.split(": ")[2].split()[0] for line in lines] == [f"{n}/200" for n in range(20, 101, 20)]
    assert lines[-1] == "lora: predict: 100/200 (50%), 1.00/s, ETA 1m40s"
    now[0] += 45.0                  # a slow stretch: a line after 30 s even without another tenth
    advance(1)
    assert len(lines) == 6 and lines[-1].startswith("lora: predict: 101/200 (50%)")
    for _ in range(99):
        advance(1)
    assert lines[-1].startswith("lora: predict: 200/200 (100%)") and "ETA" not in lines[-1]
    assert len(lines) == 11         # ten tenths and the 30-second line, nothing more


def test_progress_uses_plain_lines_when_output_is_not_a_terminal(capsys):
    with display.progress(plain=True) as start:
        advance = start("zero_shot: predict", 4)
        advance(4)
    assert "zero_shot: predict: 4/4 (100%)" in capsys.readouterr().out
    assert not display.console.is_terminal  # under pytest, as in CI logs: progress() picks plain lines itself
