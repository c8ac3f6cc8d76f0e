"""The notebooks' toys (brainvq_utils.teaching) and closing summaries (brainvq_utils.findings): each toy
shows what the prose says, from the package's own layers, and each summary can say "missed"."""

import numpy as np

from brainvq_utils import findings, priors, teaching
from brainvq_utils.vqvae import VectorQuantizer


def test_show_source_shows_the_package_code_itself():
    code = teaching.show_source(VectorQuantizer.call)
    assert code.startswith("def call(self, z, training=False):") and "stop_gradient(quantized - z)" in code
    where, _ = teaching.source_of(VectorQuantizer.call)
    assert where.startswith("brainvq_utils/vqvae.py, lines ")


def test_the_quantiser_toy_picks_the_nearest_code_and_passes_gradients_straight_through():
    toy = teaching.vq_toy()
    brute = ((toy["points"][:, None] - toy["codebook"][None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(toy["nearest"], brute)
    np.testing.assert_allclose(toy["quantized"], toy["codebook"][brute], atol=1e-6)
    np.testing.assert_allclose(toy["jacobian"], np.eye(toy["points"].size), atol=1e-6)


def test_the_ema_toy_moves_live_codes_to_their_clusters_and_restarts_the_dead_one():
    toy = teaching.ema_toy()
    assert list(toy["restarted"]) == [2]                       # only the far code, once its count fell below 1
    final = toy["codebook"][-1]
    nearest = ((final[:, None] - toy["centres"][None]) ** 2).sum(-1).min(1)
    assert nearest.max() < 0.1                                 # every code ends on a cluster centre
    before = toy["counts"][toy["restarted"][2] - 1, 2]          # the dead code's count just before its restart
    assert 1.0 <= before < 1.0 / 0.9 and before < toy["counts"][0, 2]   # one more decay step takes it below 1
    assert toy["counts"][-1].min() > 1.0                       # and every code wins vectors at the end


def test_the_dependency_maps_show_the_blind_spot_of_the_plain_pixelcnn_only():
    grid, where = (12, 12), (8, 6)
    plain = priors.build_prior("pixelcnn", 4, grid, channels=8, num_layers=4, kernel_size=3, seed=1)
    gated = priors.build_prior("gated", 4, grid, channels=8, num_layers=4, seed=1)
    for prior in (plain, gated):
        dep = teaching.dependency_map(prior, where)
        after = (np.arange(12)[:, None] * 12 + np.arange(12)[None]) >= where[0] * 12 + where[1]
        assert not dep[after].any() and dep[where[0] - 1, where[1]]     # causal, and sees the code above
    assert teaching.blind_spot(teaching.dependency_map(plain, where), where).any()
    assert not teaching.blind_spot(teaching.dependency_map(gated, where), where).any()


def test_the_blind_spot_is_told_from_mere_reach():
    dep = np.zeros((5, 5), bool)
    dep[1:3, 1:4] = True          # a block above the position (3, 2), and (1, 4) but not (2, 4) below it
    dep[1, 4] = True
    spot = teaching.blind_spot(dep, (3, 2))
    # unseen under a seen code: (2, 4), and (3, 1) in the current row; row 0 and column 0 are beyond reach
    assert sorted(zip(*np.nonzero(spot))) == [(2, 4), (3, 1)]


GOOD = {"vqvae": {"test_ssim_mean": 0.97, "test_ssim_p05": 0.95, "codebook_used_fraction": 1.0}}
BAD = {"vqvae": {"test_ssim_mean": 0.90, "test_ssim_p05": 0.80, "codebook_used_fraction": 0.3}}


def test_findings_say_met_and_missed_from_the_numbers():
    good = findings.summary(GOOD, "02", "demo", ref={})
    bad = findings.summary(BAD, "02", "demo", ref=GOOD)
    assert good.count("| met |") == 3 and "missed" not in good
    assert bad.count("| missed |") == 3 and "| 0.900 | 0.970 |" in bad and "dead" in bad
    assert "not measured" in findings.summary({}, "05", "demo", ref={})
    assert "smoke" in findings.summary(GOOD, "02", "smoke", ref={})
