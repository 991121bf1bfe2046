"""The SS VAE's latent scale folded into its exported weights (backend.train.latent_scale).

A plain reference: the unfolded encoder's mean divided by the measured RMS must equal the folded
encoder's mean, its log-variance must move by -2 log s, and the folded decoder must give the same
logits on the folded latents as the unfolded decoder on the unfolded ones (fp32, 1e-5).
"""

from __future__ import annotations

import pytest
import torch

from backend.models.ss_decoder import SparseStructureDecoder
from backend.models.ss_encoder import SparseStructureEncoder
from backend.train.latent_scale import channel_rms, fold_latent_scale

LATENT = 3


def _pair(seed: int = 0) -> tuple[SparseStructureEncoder, SparseStructureDecoder]:
    torch.manual_seed(seed)
    enc = SparseStructureEncoder(1, LATENT, 1, [4, 8], num_res_blocks_middle=1, dtype="float32")
    dec = SparseStructureDecoder(1, LATENT, 1, [8, 4], num_res_blocks_middle=1, dtype="float32")
    with torch.no_grad():  # an out layer of a scale far from 1, as a briefly trained VAE has
        enc.out_layer[2].weight.mul_(0.05)
        enc.out_layer[2].bias.copy_(torch.linspace(-0.3, 0.4, 2 * LATENT))
    return enc.eval(), dec.eval()


def _occupancy(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 16, 16, 16, generator=g) < 0.2).float()


def test_folded_weights_give_unit_rms_latents_and_the_same_reconstruction():
    enc, dec = _pair()
    occ = _occupancy(4)
    with torch.no_grad():
        _, mean, logvar = enc(occ, return_raw=True)
        logits = dec(mean)
    scale = channel_rms(enc, enc.state_dict(), [occ[:2], occ[2:]], "cpu")
    reference = mean.square().mean(dim=(0, 2, 3, 4)).sqrt()
    torch.testing.assert_close(scale, reference, rtol=1e-5, atol=0)
    assert (scale < 0.5).all()  # the test's encoder is far from unit scale: the fold has work to do

    enc_state, dec_state = fold_latent_scale(enc.state_dict(), dec.state_dict(), scale)
    folded_enc, folded_dec = _pair(seed=7)  # other weights, overwritten by the load
    folded_enc.load_state_dict(enc_state, strict=True)
    folded_dec.load_state_dict(dec_state, strict=True)
    with torch.no_grad():
        _, folded_mean, folded_logvar = folded_enc(occ, return_raw=True)
        folded_logits = folded_dec(folded_mean)
    view = scale.view(1, LATENT, 1, 1, 1)
    torch.testing.assert_close(folded_mean, mean / view, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(folded_logvar, logvar - 2 * view.log(), rtol=1e-5, atol=1e-5)
    rms = folded_mean.square().mean(dim=(0, 2, 3, 4)).sqrt()
    torch.testing.assert_close(rms, torch.ones(LATENT), rtol=1e-4, atol=0)
    torch.testing.assert_close(folded_logits, logits, rtol=1e-5, atol=1e-5)
    # Only the two boundary convolutions change; the inputs are left as they were.
    changed = {k for k, t in enc_state.items() if not torch.equal(t, enc.state_dict()[k])}
    assert changed == {"out_layer.2.weight", "out_layer.2.bias"}
    changed = {k for k, t in dec_state.items() if not torch.equal(t, dec.state_dict()[k])}
    assert changed == {"input_layer.weight"}


def test_fold_keeps_dtypes_and_rejects_a_scale_of_the_wrong_width():
    enc, dec = _pair()
    half = {k: t.half() for k, t in enc.state_dict().items()}
    enc_state, dec_state = fold_latent_scale(half, dec.state_dict(), torch.full((LATENT,), 0.5))
    assert all(t.dtype == torch.float16 for t in enc_state.values())
    with pytest.raises(ValueError, match="does not fit"):
        fold_latent_scale(enc.state_dict(), dec.state_dict(), torch.ones(LATENT + 1))
    with pytest.raises(ValueError, match="no occupancy batches"):
        channel_rms(enc, enc.state_dict(), [], "cpu")


def test_fold_works_where_the_weights_live_not_where_the_scale_was_measured():
    # The scale comes back on the CPU; the EMA weights of a GPU run live on the GPU. "meta" stands
    # in for that other device here (the first GPU run failed exactly so: cuda:0 and cpu).
    enc, dec = _pair()
    enc_state = {k: t.to("meta") for k, t in enc.state_dict().items()}
    dec_state = {k: t.to("meta") for k, t in dec.state_dict().items()}
    folded_enc, folded_dec = fold_latent_scale(enc_state, dec_state, torch.full((LATENT,), 2.0))
    assert {t.device.type for t in (*folded_enc.values(), *folded_dec.values())} == {"meta"}
