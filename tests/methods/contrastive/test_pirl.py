"""PIRL and NPID: config validation, views, eq. 5, the memory-bank step, checkpoints, learning."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from method_testing import CTX, view_batch

from sslab.methods.base import StepOutput, state_names
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.contrastive.npid import NPID, NPIDConfig
from sslab.methods.contrastive.pirl import PIRL, PIRLConfig
from sslab.methods.views import ImageView, JigsawView
from sslab.methods.views.rotation import RotationView

ALL = math.factorial(9)


def make(config, method=PIRL, num_samples=64, seed=0, width=8):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # N is capped for these small banks
        return method(config, Backbone("resnet18", cifar_stem=True, width=width), num_samples=num_samples)


def batch(n=16, seed=1, jigsaw=True):
    g = torch.Generator().manual_seed(seed)
    out = {"image": torch.randn(n, 3, 32, 32, generator=g), "idx": torch.arange(n)}
    if jigsaw:
        out["jigsaw"] = torch.randn(n, 9, 3, 8, 8, generator=g)
        out["jigsaw_perm"] = torch.zeros(n, dtype=torch.long)
    return out


# --- configuration -------------------------------------------------------------------------
def test_paper_defaults():
    c = PIRLConfig()
    assert (c.temperature, c.loss_weight, c.bank_momentum, c.num_negatives) == (0.07, 0.5, 0.5, 32000)
    assert (c.num_permutations, c.embedding_dim, c.loss_form) == (ALL, 128, "nce")
    symbols = PIRLConfig.symbols()
    assert (symbols["temperature"], symbols["loss_weight"]) == ("τ", "λ")
    assert all(symbols.values()) and set(symbols) == set(c.flat())  # column headers
    assert (c.optim.base_lr, c.optim.warmup_epochs) == (0.03, 5)


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("loss_weight", 1.5, "loss_weight (λ) = 1.5 is outside the allowed range [0, 1]"),
        ("loss_weight", -0.1, "loss_weight (λ) = -0.1 is outside the allowed range [0, 1]"),
        ("temperature", 0.0, "temperature (τ) = 0.0 is outside the allowed range (0, inf)"),
        ("temperature", -1.0, "temperature (τ) = -1.0 is outside the allowed range (0, inf)"),
        ("temperature", float("nan"), "temperature (τ) = nan is outside the allowed range (0, inf)"),
        ("bank_momentum", 1.0, "bank_momentum (α) = 1.0 is outside the allowed range [0, 1)"),
        ("bank_momentum", -0.5, "bank_momentum (α) = -0.5 is outside the allowed range [0, 1)"),
        ("num_negatives", 0, "num_negatives (N) = 0 is outside the allowed range [1, inf)"),
        ("num_negatives", 2.5, "num_negatives (N) = 2.5 must be an integer in [1, inf)"),
        ("num_permutations", 0, f"num_permutations (P) = 0 is outside the allowed range [1, {ALL}]"),
        ("num_permutations", ALL + 1, f"num_permutations (P) = {ALL + 1} is outside the allowed range [1, {ALL}]"),
        ("embedding_dim", 0, "embedding_dim (d) = 0 is outside the allowed range [1, inf)"),
        ("loss_form", "hinge", "loss_form = 'hinge' is not one of the allowed values {nce, infonce}"),
    ],
)
def test_bad_values_name_field_value_and_range(field, value, expected):
    with pytest.raises(ValueError) as raised:
        PIRLConfig.from_flat({field: value})
    assert str(raised.value) == expected
    config = PIRLConfig()  # validate() also catches values set after construction
    setattr(config, field, value)
    with pytest.raises(ValueError, match=field):
        config.validate()


def test_edges_of_the_ranges_are_allowed():
    PIRLConfig(loss_weight=0, bank_momentum=0.0, num_negatives=1, num_permutations=1)
    PIRLConfig(loss_weight=1, num_permutations=ALL, loss_form="infonce")


def test_npid_config_fixes_lambda_at_zero():
    assert NPIDConfig().loss_weight == 0
    with pytest.raises(ValueError, match=r"loss_weight \(λ\) = 0.5 .*\[0, 0\].*pirl"):
        NPIDConfig(loss_weight=0.5)
    with pytest.raises(ValueError, match="temperature"):
        NPIDConfig(temperature=0)


# --- views, heads, bookkeeping -------------------------------------------------------------
def test_views_follow_lambda():
    pirl = make(PIRLConfig(num_permutations=100, permutation_seed=3, embedding_dim=16))
    config = pirl.config
    assert PIRL.views(config, 32) == [ImageView(), JigsawView(num_permutations=100, permutation_seed=3)]
    assert PIRL.invariance_views(config, 32) == PIRL.views(config, 32)
    assert not pirl.unused_parameters()
    npid = make(NPIDConfig(embedding_dim=16), method=NPID)
    assert NPID.views(npid.config, 32) == [ImageView()]
    assert [type(v) for v in NPID.invariance_views(npid.config, 32)] == [ImageView, JigsawView]
    assert set(state_names(npid, npid.unused_parameters())) == {
        n for n, _ in npid.named_parameters() if "patch_head" in n or "jigsaw_head" in n}
    assert npid.name == "npid" and pirl.name == "pirl"


def test_num_negatives_is_capped_with_a_warning():
    with pytest.warns(UserWarning, match=r"num_negatives \(N\) = 32000.*N = 63"):
        method = PIRL(PIRLConfig(), Backbone("resnet18", width=8), num_samples=64)
    assert method.num_negatives == 63
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PIRL(PIRLConfig(num_negatives=10), Backbone("resnet18", width=8), num_samples=64).num_negatives == 10


def test_invariance_pair_is_normalised_and_gradient_free():
    method = make(PIRLConfig(embedding_dim=16))
    f, g = method.invariance_pair(batch(4))
    assert f.shape == g.shape == (4, 16)
    assert torch.allclose(f.norm(dim=1), torch.ones(4)) and torch.allclose(g.norm(dim=1), torch.ones(4))
    assert not f.requires_grad and not g.requires_grad


# --- the loss ------------------------------------------------------------------------------
def test_training_step_reports_eq5_terms_and_estimates_z_once():
    method = make(PIRLConfig(embedding_dim=16, loss_weight=0.25))
    assert torch.isnan(method.log_z_image) and torch.isnan(method.log_z_jigsaw)
    out = method(batch(), CTX)  # forward == training_step
    loss, metrics = out.loss, out.metrics
    assert set(metrics) == {"loss", "loss_image", "loss_jigsaw"}
    metrics = {k: v.item() for k, v in metrics.items()}  # detached 0-d tensors, left on the device
    assert metrics["loss"] == pytest.approx(0.25 * metrics["loss_jigsaw"] + 0.75 * metrics["loss_image"], rel=1e-6)
    assert loss.item() == pytest.approx(metrics["loss"])
    z = (method.log_z_image.item(), method.log_z_jigsaw.item())
    assert all(math.isfinite(v) for v in z) and z[0] != z[1]
    method.training_step(batch(seed=5), CTX)
    assert (method.log_z_image.item(), method.log_z_jigsaw.item()) == z


def test_lambda_zero_pirl_equals_npid_and_needs_no_jigsaw():
    pirl = make(PIRLConfig(loss_weight=0.0, embedding_dim=16))
    npid = make(NPIDConfig(embedding_dim=16), method=NPID)
    assert pirl.state_dict().keys() == npid.state_dict().keys()
    data = batch(jigsaw=False)
    torch.manual_seed(42)
    loss_pirl = pirl.training_step(data, CTX).loss
    torch.manual_seed(42)
    out = npid.training_step(data, CTX)
    loss_npid, metrics_npid = out.loss, out.metrics
    assert torch.equal(loss_pirl, loss_npid)
    assert math.isnan(metrics_npid["loss_jigsaw"]) and metrics_npid["loss"] == metrics_npid["loss_image"]
    loss_npid.backward()
    assert all(p.grad is None for p in npid.jigsaw_head.parameters())


def test_at_lambda_one_the_gradient_is_the_jigsaw_terms_alone_and_f_still_fills_the_bank():
    """At λ = 1 the image term weighs 0, so the step builds no graph through f: the parameters'
    gradients are those of L_NCE(m_I, g(v_I^t)) computed on its own, f's head gets none, and
    after_step still moves the bank towards f(v_I)."""
    method = make(PIRLConfig(embedding_dim=16, loss_weight=1.0, loss_form="infonce"), width=4)
    data = batch()
    torch.manual_seed(3)
    out = method.training_step(data, CTX)
    loss, metrics = out.loss, out.metrics
    loss.backward()
    got = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    unused = set(state_names(method, method.unused_parameters()))
    assert unused == {n for n, _ in method.named_parameters() if n.startswith("image_head.")}
    assert set(got) == {n for n, _ in method.named_parameters()} - unused
    assert loss.item() == pytest.approx(metrics["loss_jigsaw"].item()) and metrics["loss_image"].item() > 0

    reference = make(PIRLConfig(embedding_dim=16, loss_weight=1.0, loss_form="infonce"), width=4)
    torch.manual_seed(3)
    negatives = reference.memory_bank.sample_negatives(16, reference.num_negatives)  # the draw the step made
    reference.embed_image(data["image"])  # the same BatchNorm running-statistics update as the step's
    jigsaw = reference._contrast("jigsaw", reference.embed_jigsaw(data["jigsaw"]), data["idx"], negatives)
    jigsaw.backward()
    assert jigsaw.item() == pytest.approx(loss.item(), rel=1e-6)
    for name, grad in got.items():
        torch.testing.assert_close(grad, dict(reference.named_parameters())[name].grad, rtol=1e-5, atol=1e-7)

    before = method.memory_bank.bank[data["idx"]].clone()
    method.after_step(data, out, CTX)
    with torch.no_grad():
        f = method.embed_image(data["image"])
    moved = method.memory_bank.bank[data["idx"]]
    assert ((moved * f).sum(1) > (before * f).sum(1)).all()  # each row moved towards its f(v_I)


def test_infonce_form_matches_cross_entropy_with_memory_bank_rows():
    method = make(PIRLConfig(embedding_dim=16, loss_weight=0.0, loss_form="infonce", num_negatives=20))
    data = batch(8)
    torch.manual_seed(7)
    loss = method.training_step(data, CTX).loss
    torch.manual_seed(7)
    negatives = method.memory_bank.sample_negatives(8, 20)
    f = method.embed_image(data["image"])
    keys = torch.cat([method.memory_bank.rows(data["idx"])[:, None], method.memory_bank.rows(negatives)], dim=1)
    logits = torch.einsum("bd,bkd->bk", f, keys) / 0.07
    assert loss.item() == pytest.approx(F.cross_entropy(logits, torch.zeros(8, dtype=torch.long)).item(), rel=1e-5)
    assert torch.isnan(method.log_z_image)  # Z belongs to the NCE form only


# --- state ---------------------------------------------------------------------------------
def test_after_step_moves_bank_rows_towards_f():
    method = make(PIRLConfig(embedding_dim=16, bank_momentum=0.3))
    data = batch(6)
    before = method.memory_bank.bank.clone()
    out = method.training_step(data, CTX)
    f = method.embed_image(data["image"]).detach()  # train-mode BN: same batch, same output
    method.after_step(data, out, CTX)
    expected = F.normalize(0.3 * before[:6] + 0.7 * f, dim=1)
    assert torch.allclose(method.memory_bank.bank[:6], expected, atol=1e-5)
    assert torch.equal(method.memory_bank.bank[6:], before[6:])
    assert torch.allclose(method.memory_bank.bank.norm(dim=1), torch.ones(64), atol=1e-5)
    with pytest.raises(RuntimeError, match="training_step"):  # the step's embeddings are not in the output
        method.after_step(data, StepOutput(out.loss, out.metrics), CTX)


def _in_batches(images, size):
    for start in range(0, len(images), size):
        yield {"image": images[start:start + size], "idx": torch.arange(start, start + min(size, len(images) - start))}


def test_bank_init_features_writes_every_row_from_the_untrained_network():
    images = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    m = make(PIRLConfig(bank_init="features"))
    m.eval()
    running = {k: v.clone() for k, v in m.backbone.state_dict().items() if "running" in k}
    m.before_training(_in_batches(images, 24))  # batches of 24, 24, 16
    assert not m.training  # the mode it had is restored
    # BatchNorm normalised each batch by its own statistics and left its running estimates alone
    assert all(torch.equal(m.backbone.state_dict()[k], v) for k, v in running.items())
    fresh = make(PIRLConfig(bank_init="features"))
    fresh.train()
    for k, v in running.items():
        assert torch.equal(fresh.backbone.state_dict()[k], v)
    with torch.no_grad():
        expected = torch.cat([F.normalize(fresh.image_head(fresh.backbone(images[s:s + 24])), dim=1)
                              for s in (0, 24, 48)])
    torch.testing.assert_close(m.memory_bank.bank, expected, rtol=0, atol=1e-6)

    paper = make(PIRLConfig())  # the paper's random rows: before_training reads nothing
    before = paper.memory_bank.bank.clone()
    paper.before_training(iter(()))
    assert torch.equal(paper.memory_bank.bank, before)


def test_bank_init_features_refuses_a_bank_with_unwritten_rows():
    m = make(PIRLConfig(bank_init="features"))
    with pytest.raises(ValueError, match="got 40 of the 64 training images"):
        m.before_training(_in_batches(torch.randn(40, 3, 32, 32), 20))


def test_state_dict_round_trip_restores_bank_and_z():
    method = make(PIRLConfig(embedding_dim=16))
    method.after_step(batch(), method.training_step(batch(), CTX), CTX)
    state = method.state_dict()
    assert {"memory_bank.bank", "log_z_image", "log_z_jigsaw"} <= set(state)
    fresh = make(PIRLConfig(embedding_dim=16), seed=99)
    assert not torch.equal(fresh.memory_bank.bank, method.memory_bank.bank)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.memory_bank.bank, method.memory_bank.bank)
    assert torch.equal(fresh.log_z_image, method.log_z_image)
    assert torch.equal(fresh.log_z_jigsaw, method.log_z_jigsaw)
    fresh.training_step(batch(seed=3), CTX)  # a restored Z is used, not re-estimated
    assert torch.equal(fresh.log_z_image, method.log_z_image)


def test_sgd_steps_lower_the_pirl_loss_on_a_fixed_batch():
    # The memory bank is held fixed (no after_step), so eq. 5 is a stationary objective, and the
    # loss is measured before and after with the same negatives (the same RNG state).
    method = make(PIRLConfig(), num_samples=64)
    data = batch(16)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)

    def loss_with_fixed_negatives():
        with torch.random.fork_rng():
            torch.manual_seed(123)
            return method.training_step(data, CTX).metrics

    first = loss_with_fixed_negatives()
    for _ in range(5):
        loss = method.training_step(data, CTX).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = loss_with_fixed_negatives()
    assert last["loss"] < 0.8 * first["loss"]
    assert last["loss_image"] < first["loss_image"] and last["loss_jigsaw"] < first["loss_jigsaw"]


def test_jigsaw_patches_leave_batchnorm_running_statistics_to_the_images():
    """The frozen backbone is evaluated on whole images: patch passes must not move its BN estimates."""
    with_patches = make(PIRLConfig(loss_weight=0.5, embedding_dim=16))
    images_only = make(PIRLConfig(loss_weight=0.0, embedding_dim=16))
    data = batch()
    with_patches.training_step(data, CTX)
    images_only.training_step(data, CTX)
    stats = [k for k in with_patches.backbone.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert stats
    for key in stats:
        torch.testing.assert_close(with_patches.backbone.state_dict()[key], images_only.backbone.state_dict()[key])
    assert all(m.momentum == 0.1 for m in with_patches.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


# --- other transforms: rotation, jigsaw + rotation ------------------------------------------
HEADS = {"jigsaw": {"patch_head", "jigsaw_head"}, "rotation": {"rotation_head"},
         "jigsaw+rotation": {"patch_head", "jigsaw_head", "rotation_head"}}


def views_batch(config, n=8, seed=0):
    """A batch of the views ``config`` declares, made from random images by the data pipeline's code."""
    return view_batch(PIRL.views(config, 32), n, seed=seed, idx="arange")


@pytest.mark.parametrize("transform", ["jigsaw", "rotation", "jigsaw+rotation"])
def test_each_transform_declares_its_views(transform):
    config = PIRLConfig(transform=transform)
    shapes = {"image": (8, 3, 32, 32)}
    if "jigsaw" in transform:
        shapes.update(jigsaw=(8, 9, 3, 8, 8), jigsaw_perm=(8,))
    if "rotation" in transform:
        shapes.update(rotation=(8, 3, 32, 32), rotation_label=(8,))
    assert {k: tuple(v.shape) for k, v in views_batch(config).items() if k != "idx"} == shapes
    rotation = RotationView(name="rotation", size=32, all_rotations=False, padding=4)  # any quarter turn
    expected = [ImageView()] + ([JigsawView()] if "jigsaw" in transform else []) + (
        [rotation] if "rotation" in transform else [])
    assert PIRL.views(config, 32) == expected
    assert PIRL.views(PIRLConfig(transform=transform, loss_weight=0.0), 32) == [ImageView()]
    # invariance: the configured transform(s) at any λ, the rotated image never turned by 0°
    invariance = [v if v != rotation else RotationView(name="rotation", size=32, all_rotations=False, padding=4,
                                                       rotations=(1, 2, 3)) for v in expected]
    assert PIRL.invariance_views(config, 32) == invariance
    assert PIRL.invariance_views(PIRLConfig(transform=transform, loss_weight=0.0), 32) == invariance
    with pytest.raises(ValueError, match="transform .* is not one of the allowed values"):
        PIRLConfig(transform="colour")
    assert PIRLConfig().transform == "jigsaw"


def _hand_written_term(emb, bank, idx, negatives, tau, loss_form, num_samples, log_z=None):
    """Eq. 3-4 (NCE) or the softmax over [positive, negatives] (InfoNCE), per image, averaged; float64."""
    pos = (emb * bank[idx]).sum(dim=1) / tau
    neg = torch.einsum("bd,bnd->bn", emb, bank[negatives]) / tau
    if loss_form == "infonce":
        return (torch.log(torch.exp(pos) + torch.exp(neg).sum(dim=1)) - pos).mean()
    noise = negatives.shape[1] / num_samples  # N / |D|: the noise distribution's mass
    e_pos, e_neg = torch.exp(pos - log_z), torch.exp(neg - log_z)
    return (-torch.log(e_pos / (e_pos + noise)) - torch.log(1 - e_neg / (e_neg + noise)).sum(dim=1)).mean()


@pytest.mark.parametrize("loss_form", ["nce", "infonce"])
def test_rotation_term_contrasts_g_of_the_rotated_image_with_the_memory_bank(loss_form):
    config = PIRLConfig(transform="rotation", loss_weight=0.25, embedding_dim=16, num_negatives=20, loss_form=loss_form)
    method = make(config, width=4)
    data = views_batch(config)
    torch.manual_seed(7)
    out = method.training_step(data, CTX)
    loss, metrics = out.loss, out.metrics
    assert set(metrics) == {"loss", "loss_image", "loss_rotation"}
    torch.manual_seed(7)
    negatives = method.memory_bank.sample_negatives(8, 20)  # the draw the step made
    with torch.no_grad():  # train-mode BatchNorm: the same inputs give the same features
        f = F.normalize(method.image_head(method.backbone(data["image"])), dim=1).double()
        g = F.normalize(method.rotation_head(method.backbone(data["rotation"])), dim=1).double()
    bank, idx = method.memory_bank.bank.double(), data["idx"]
    log_z = {}
    if loss_form == "nce":  # Z of each term from its first batch: |D| · mean exp(s / τ) over s_pos and s_neg
        for term, emb in (("image", f), ("rotation", g)):
            s = torch.cat([(emb * bank[idx]).sum(dim=1, keepdim=True),
                           torch.einsum("bd,bnd->bn", emb, bank[negatives])], dim=1) / 0.07
            log_z[term] = math.log(64) + torch.log(torch.exp(s).mean())
            assert getattr(method, f"log_z_{term}").item() == pytest.approx(log_z[term].item(), rel=1e-5)
    rotation = _hand_written_term(g, bank, idx, negatives, 0.07, loss_form, 64, log_z.get("rotation"))
    image = _hand_written_term(f, bank, idx, negatives, 0.07, loss_form, 64, log_z.get("image"))
    assert metrics["loss_rotation"].item() == pytest.approx(rotation.item(), rel=1e-5)
    assert metrics["loss_image"].item() == pytest.approx(image.item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.25 * rotation.item() + 0.75 * image.item(), rel=1e-5)


@pytest.mark.parametrize("loss_form", ["nce", "infonce"])
def test_the_default_is_the_jigsaw_path_and_the_combination_averages_both_terms(loss_form):
    lam = 0.3
    for transform in ("jigsaw", "jigsaw+rotation"):
        method = make(PIRLConfig(transform=transform, loss_weight=lam, embedding_dim=16, loss_form=loss_form), width=4)
        data = views_batch(method.config)
        torch.manual_seed(11)
        out = method.training_step(data, CTX)
        loss, metrics = out.loss, out.metrics
        torch.manual_seed(11)
        negatives = method.memory_bank.sample_negatives(8, method.num_negatives)
        idx = data["idx"]
        image = method._contrast("image", method.embed_image(data["image"]), idx, negatives)
        jigsaw = method._contrast("jigsaw", method.embed_jigsaw(data["jigsaw"]), idx, negatives)
        if transform == "jigsaw":  # eq. 5 as before the transform field, bit for bit
            assert set(metrics) == {"loss", "loss_image", "loss_jigsaw"}
            assert torch.equal(loss, lam * jigsaw + (1 - lam) * image)
            assert torch.equal(metrics["loss_jigsaw"], jigsaw.detach())
        else:
            rotation = method._contrast("rotation", method.embed_rotation(data["rotation"]), idx, negatives)
            assert set(metrics) == {"loss", "loss_image", "loss_jigsaw", "loss_rotation"}
            torch.testing.assert_close(loss, lam * (jigsaw + rotation) / 2 + (1 - lam) * image)
            assert not torch.allclose(jigsaw, rotation)


@pytest.mark.parametrize("transform", ["jigsaw", "rotation", "jigsaw+rotation"])
def test_unused_parameters_and_state_follow_the_transform_and_lambda(transform):
    for lam in (0.0, 0.5, 1.0):
        method = make(PIRLConfig(transform=transform, loss_weight=lam, embedding_dim=16), width=4)
        assert {n.split(".")[0] for n, _ in method.named_parameters() if "head" in n} == HEADS[transform] | {"image_head"}
        assert {k for k in method.state_dict() if k.startswith("log_z")} == {
            "log_z_image", *(f"log_z_{t}" for t in transform.split("+"))}
        out = method.training_step(views_batch(method.config), CTX)
        loss, metrics = out.loss, out.metrics
        loss.backward()
        no_gradient = {n for n, p in method.named_parameters() if p.grad is None}
        unused_heads = HEADS[transform] if lam == 0 else {"image_head"} if lam == 1 else set()
        expected = {n for n, _ in method.named_parameters() if n.split(".")[0] in unused_heads}
        assert set(state_names(method, method.unused_parameters())) == no_gradient == expected
        assert all(math.isnan(metrics[f"loss_{t}"]) for t in transform.split("+")) == (lam == 0)


@pytest.mark.parametrize("transform", ["rotation", "jigsaw+rotation"])
def test_invariance_pair_measures_the_configured_transforms(transform):
    config = PIRLConfig(transform=transform, embedding_dim=16)
    method = make(config, width=4).eval()
    data = view_batch(PIRL.invariance_views(config, 32), 6, train=False)
    assert data["rotation_label"].tolist() == [1, 2, 3, 1, 2, 3]
    f, g = method.invariance_pair(data)
    expected_g = [method.embed_rotation(data["rotation"])]
    if transform == "jigsaw+rotation":  # each image's jigsaw distance, then its rotation distance
        expected_g.insert(0, method.embed_jigsaw(data["jigsaw"]))
    rows = 6 * len(expected_g)
    assert f.shape == g.shape == (rows, 16) and not g.requires_grad
    torch.testing.assert_close(f, method.embed_image(data["image"]).repeat(len(expected_g), 1))
    torch.testing.assert_close(g, torch.cat(expected_g))
    torch.testing.assert_close(g.norm(dim=1), torch.ones(rows))


def test_rotated_images_leave_batchnorm_running_statistics_to_the_images():
    with_rotation = make(PIRLConfig(transform="rotation", loss_weight=0.5, embedding_dim=16), width=4)
    images_only = make(PIRLConfig(transform="rotation", loss_weight=0.0, embedding_dim=16), width=4)
    data = views_batch(with_rotation.config)
    with_rotation.training_step(data, CTX)
    images_only.training_step(data, CTX)
    stats = [k for k in with_rotation.backbone.state_dict() if k.endswith(("running_mean", "running_var"))]
    for key in stats:
        torch.testing.assert_close(with_rotation.backbone.state_dict()[key], images_only.backbone.state_dict()[key])
