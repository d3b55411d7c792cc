"""CPU threads of a new run (issue 22 point 10)."""
from __future__ import annotations


def test_default_threads_follow_the_idle_cores(monkeypatch, tmp_path):
    """Issue 22 point 10: a new CPU run takes torch's thread count lowered to the cores other
    processes leave idle (measured from /proc/stat), at least 1, and writes it into recipe.yaml
    so that a resumed run computes with the same count."""
    import trainlab
    from trainlab import device

    assert device.idle_cores((100, 1000), (150, 1100), 2) == 1.0  # half the ticks idle on 2 CPUs
    assert device.idle_cores((100, 1000), (100, 1000), 4) == 4.0  # no ticks elapsed: assume idle
    readings = iter([(0, 0), (10, 200)])  # 5% idle of 4 CPUs: 0.2 cores
    monkeypatch.setattr(device, "cpu_times", lambda: next(readings))
    monkeypatch.setattr(device.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(device.torch, "get_num_threads", lambda: 4)
    assert device.default_threads(0.0) == 1
    readings = iter([(0, 0), (150, 200)])  # 3 idle cores
    assert device.default_threads(0.0) == 3
    monkeypatch.setattr(device, "cpu_times", lambda: None)  # no /proc/stat: torch's count
    assert device.default_threads(0.0) == 4
    monkeypatch.undo()
    run = trainlab.fit(None, ["train.epochs=1", "run.tensorboard=false", "run.plots=false", "doctor=null",
                              f"run.dir={tmp_path / 'r'}"], quiet=True)
    assert isinstance(run.recipe().train.threads, int) and run.recipe().train.threads >= 1
