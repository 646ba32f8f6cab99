import pytest
import torch

from dlstudio_aspp.model import StockMUNet, from_stock_checkpoint, load_stock_state_dict, model_summary, mUNetASPP


@pytest.mark.parametrize("size", [64, 256])
def test_aspp_off_equals_stock_exactly(size):
    torch.manual_seed(0)
    stock = StockMUNet(skip_connections=True, depth=16).eval()
    ours = mUNetASPP(skip_connections=True, depth=16, aspp=False).eval()
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(ours(x), stock(x))


def test_stock_state_dict_loads_only_aspp_missing(tmp_path):
    stock = StockMUNet(skip_connections=True, depth=16)
    ours = mUNetASPP()
    missing = load_stock_state_dict(ours, stock.state_dict())
    assert missing and all(k.startswith("aspp.") for k in missing)
    new = {k for k in set(ours.state_dict()) - set(stock.state_dict()) if not k.endswith("num_batches_tracked")}
    assert new == set(missing)
    torch.save(stock.state_dict(), tmp_path / "stock.pt")
    m = from_stock_checkpoint(tmp_path / "stock.pt")
    assert torch.equal(m.conv_in.weight, stock.conv_in.weight)
    with pytest.raises(ValueError, match="not a stock mUNet"):
        load_stock_state_dict(mUNetASPP(num_classes=3), stock.state_dict())


def test_keeps_stock_attribute_names():
    stock_keys = set(StockMUNet().state_dict())
    assert stock_keys <= set(mUNetASPP(aspp=False).state_dict())
    assert stock_keys == set(mUNetASPP(aspp=False).state_dict())


SETTINGS = [(False, (2, 4, 6), True), (True, (2, 4, 6), True), (True, (1, 3), False)]
CASES = [(*s, c, b, 64) for s in SETTINGS for c in (1, 3, 5) for b in (1, 4)]
CASES += [(*s, 3, b, 256) for s in SETTINGS for b in (1, 4)]  # 256x256 once per setting and batch size


@pytest.mark.parametrize("aspp,rates,pool,num_classes,batch,size", CASES)
def test_forward_backward(aspp, rates, pool, num_classes, batch, size):
    m = mUNetASPP(depth=4, num_classes=num_classes, aspp=aspp, aspp_rates=rates, aspp_pooling=pool).train()
    y = m(torch.randn(batch, 3, size, size))
    assert y.shape == (batch, num_classes, size, size)
    y.square().mean().backward()
    # stock mUNet leaves some blocks unused (e.g. convo2 where in_ch != out_ch); we match it
    stock = StockMUNet(depth=4).train()
    stock(torch.randn(2, 3, 64, 64)).square().mean().backward()
    unused = {n for n, p in stock.named_parameters() if p.grad is None}
    got = {n for n, p in m.named_parameters() if p.grad is None}
    assert got == unused
    assert "conv_out.weight" not in got and (not aspp or m.aspp.project[0].weight.grad is not None)


def test_input_checks_at_the_boundary():
    m = mUNetASPP(depth=4).eval()
    stock = StockMUNet(depth=4).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 8, 16)).shape == (1, 5, 8, 16)
        # stock silently returns a wrong-size map for 9x9 (and 3x3); we refuse
        assert stock(torch.randn(1, 3, 9, 9)).shape[-1] == 8
    for shape in [(1, 3, 9, 9), (1, 3, 63, 64), (1, 3, 4, 4), (1, 1, 64, 64), (3, 64, 64)]:
        with pytest.raises(ValueError, match="multiples of 8|expects a"):
            m(torch.randn(*shape))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        mUNetASPP(num_classes=0)
    with pytest.raises(ValueError, match="rates"):
        mUNetASPP(aspp_rates=[])


def test_summary_reports_aspp_cost():
    on, off = model_summary(mUNetASPP()), model_summary(mUNetASPP(aspp=False))
    assert on["aspp_params"] > 0 and off["aspp_params"] == 0
    assert on["params"] - off["params"] == on["aspp_params"]
    assert on["gflops"] > off["gflops"] > 0


def test_reachable_from_segmenter():
    from dlstudio_aspp.segmentation import SemanticSegmentationASPP

    assert SemanticSegmentationASPP.mUNetASPP is mUNetASPP


def test_few_sgd_steps_lower_the_loss():
    torch.manual_seed(0)
    m = mUNetASPP(depth=4).train()
    x = torch.rand(4, 3, 64, 64) * 255
    t = (x[:, :1] > 128).float().repeat(1, 5, 1, 1) * 50
    opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_describe_reports_with_and_without_aspp():
    from dlstudio_aspp.segmentation import SemanticSegmentationASPP

    m = mUNetASPP(depth=4)
    on, off = model_summary(m), model_summary(mUNetASPP(depth=4, aspp=False))
    text = SemanticSegmentationASPP.describe(m)
    assert f"{on['params']:,} with ASPP, {off['params']:,} without" in text
    assert f"{on['gflops']:.3f} with ASPP, {off['gflops']:.3f} without" in text
    assert m.aspp is not None  # put back
    assert "output pixels that depend on the input: 25% (head 'stock')" in text
    assert "depend on the input: 100% (head 'dense')" in SemanticSegmentationASPP.describe(mUNetASPP(depth=4, head="dense"))


@pytest.mark.parametrize("head,expected", [("stock", 0.25), ("dense", 1.0), ("bilinear", 1.0)])
def test_fraction_of_pixels_that_depend_on_the_input(head, expected):
    from dlstudio_aspp.model import input_dependent_fraction

    torch.manual_seed(0)
    net = mUNetASPP(depth=4, head=head).eval()
    assert input_dependent_fraction(net) == expected
    # the same by gradients: the output pixels whose gradient w.r.t. the input is non-zero
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    out = net(x)
    dep = torch.zeros(8, 8, dtype=torch.bool)
    for i in range(8):
        for j in range(8):
            (g,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
            dep[i, j] = bool(g.abs().sum() > 0)
    assert dep.float().mean().item() == expected
    if head == "stock":  # exactly the odd rows or columns are the bias alone
        assert dep[0::2, 0::2].all() and not dep[1::2].any() and not dep[:, 1::2].any()
        assert torch.equal(out[0, :, 0, 1], net.conv_out.bias)


def test_head_default_is_stock_and_bad_names_list_the_valid_ones():
    assert mUNetASPP(depth=4).config["head"] == "stock"
    with pytest.raises(ValueError, match="--head must be one of stock, dense, bilinear, got 'wide'"):
        mUNetASPP(depth=4, head="wide")


def test_stock_checkpoint_into_a_dense_model_loads_all_but_the_last_layer(capsys):
    torch.manual_seed(0)
    stock = StockMUNet(skip_connections=True, depth=8).state_dict()
    model = from_stock_checkpoint(stock, depth=8, head="dense")
    assert "every stock layer but the output layer" in capsys.readouterr().out
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in stock.items() if not k.startswith("conv_out."))
    assert own["conv_out.weight"].shape == (64, 5, 4, 4)
