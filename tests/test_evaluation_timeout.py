"""tuning.evaluation_timeout_minutes: an evaluation after training that hangs (a custom metric, the
generation metrics, lm-eval) fails its trial with a message naming it, instead of holding the run
forever at its last step."""

import signal
import time

import pytest


def test_a_custom_metric_past_the_evaluation_time_limit_is_stopped_and_named(tmp_path, monkeypatch):
    from snaketune.metrics import CustomMetric, EvaluationTimeout, compute_custom_metrics

    (tmp_path / "slow_metrics.py").write_text(
        "import time\n"
        "def quick(**context):\n    return 1.0\n"
        "def hangs(**context):\n    while True:\n        time.sleep(0.01)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    custom = [CustomMetric(name="quick", function="slow_metrics.quick"),
              CustomMetric(name="stuck", function="slow_metrics.hangs")]
    started = time.monotonic()
    with pytest.raises(EvaluationTimeout) as stopped:
        compute_custom_metrics(custom, timeout_minutes=0.01)  # 0.6 s
    assert time.monotonic() - started < 30
    assert str(stopped.value) == ("custom metric 'stuck' (slow_metrics.hangs) ran past "
                                  "tuning.evaluation_timeout_minutes (0.01 min) and was stopped; raise the limit "
                                  "if it needs longer, or make it faster")
    assert compute_custom_metrics(custom[:1], timeout_minutes=0.01) == {"quick": 1.0}
    time.sleep(1)  # the timer is off once the block ends: nothing fires later
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_the_evaluation_time_limit_is_a_setting_of_its_own(tmp_path):
    from snaketune.config import ConfigError
    from workflow_helpers import resolved_tuning

    assert resolved_tuning(tmp_path).evaluation_timeout_minutes == 180
    assert resolved_tuning(tmp_path, evaluation_timeout_minutes=5).evaluation_timeout_minutes == 5
    with pytest.raises(ConfigError, match="tuning.evaluation_timeout_minutes"):
        resolved_tuning(tmp_path, evaluation_timeout_minutes=0)
