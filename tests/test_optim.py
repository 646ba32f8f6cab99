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


def test_grad_clip_bounds_the_update():
    from dlstudio_aspp.spec import RunSpec
    from dlstudio_aspp.optim import make_optimizer

    net = torch.nn.Linear(4, 1)
    opts = RunSpec(optimizer="sgd", lr=1.0, momentum=0.0, grad_clip=0.01)
    opt = make_optimizer(net, opts)
    before = [p.detach().clone() for p in net.parameters()]
    (net(torch.full((1, 4), 100.0)) ** 2).sum().backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), opts.grad_clip)
    opt.step()
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before)])
    assert step.norm().item() == pytest.approx(0.01, rel=1e-3)
