"""The optimizer and the learning-rate schedules."""
import pytest
import torch


@pytest.mark.parametrize("schedule,warmup", [("constant", 2), ("cosine", 0), ("cosine", 2), ("onecycle", 0)])
def test_schedules(schedule, warmup):
    from dlstudio_aspp.spec import RunSpec
    from dlstudio_aspp.optim import make_optimizer, make_scheduler

    net = torch.nn.Linear(2, 2)
    opts = RunSpec(optimizer="adam", lr=0.1, schedule=schedule, warmup=warmup)
    opt = make_optimizer(net, opts)
    sched = make_scheduler(opt, opts, total=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if warmup:
        assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)
    if schedule == "constant":
        assert lrs[2:] == [pytest.approx(0.1)] * 8
    elif schedule == "cosine":
        assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    else:
        assert max(lrs) == pytest.approx(0.1, rel=0.05) and lrs[0] < 0.01 and lrs[-1] < 1e-3


def test_stock_options_make_no_scheduler():
    from dlstudio_aspp.spec import RunSpec
    from dlstudio_aspp.optim import make_optimizer, make_scheduler

    opts = RunSpec(lr=1e-4, momentum=0.9)
    opt = make_optimizer(torch.nn.Linear(2, 2), opts)
    assert make_scheduler(opt, opts, 100) is None and isinstance(opt, torch.optim.SGD)


@pytest.mark.parametrize("scale", [None, 1024.0])
def test_grad_clip_bounds_the_true_update_under_a_scaler(scale):
    """The package's step clips the unscaled gradients: with a loss scaled by 1024 (as AMP does), the update
    is still 0.01 long, not 0.01/1024 (clipping the scaled gradients) nor unclipped."""
    from dlstudio_aspp.optim import clipped_step, make_optimizer
    from dlstudio_aspp.spec import RunSpec

    net = torch.nn.Linear(4, 1)
    opts = RunSpec(optimizer="sgd", lr=1.0, momentum=0.0, grad_clip=0.01)
    opt = make_optimizer(net, opts)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale or 1.0, enabled=scale is not None)
    before = [p.detach().clone() for p in net.parameters()]
    scaler.scale((net(torch.full((1, 4), 100.0)) ** 2).sum()).backward()
    clipped_step(opt, scaler, net.parameters(), opts.grad_clip)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before)])
    assert step.norm().item() == pytest.approx(0.01, rel=1e-3)
