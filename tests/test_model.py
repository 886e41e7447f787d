"Model family: parameter budget of the default fusion model, interface of every kind, attention maps."
import pytest, torch
from xattn.model import FUSION_KINDS, FusionConfig, build_model, count_parameters

D_SEM, D_MOT = 384, 2048   # DINOv3 ViT-S+/16 CLS, I3D R50 temporal tokens


def test_default_fusion_under_20m_trainable_parameters():
    model = build_model(FusionConfig(), D_SEM, D_MOT)
    counts = count_parameters(model)
    print(f"\ndefault cross-attention fusion (dim 256, 8 heads, depth 2, 174 classes, d_sem {D_SEM}, d_mot {D_MOT}): "
          f"{counts['trainable']:,} trainable parameters; by module: {counts['by_module']}")
    assert counts["trainable"] == counts["total"] == sum(counts["by_module"].values())
    assert counts["trainable"] < 20_000_000
    assert model.cfg.heads == 8 and model.cfg.n_classes == 174


@pytest.mark.parametrize("kind", FUSION_KINDS)
def test_every_kind_same_interface(kind):
    torch.manual_seed(0)
    model = build_model(FusionConfig(kind=kind, dim=64, heads=8, depth=2, n_classes=10), D_SEM, D_MOT).eval()
    sem, mot = torch.randn(3, 16, D_SEM), torch.randn(3, 4, D_MOT)
    logits, maps = model(sem, mot, return_attention=True)
    assert logits.shape == (3, 10) and len(maps) == 2
    for block in maps:
        for name, w in block.items():
            assert w.shape[:2] == (3, 8), name
            torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    assert model.attention_maps[0].keys() == maps[0].keys()


def test_cross_attention_maps_directions():
    model = build_model(FusionConfig(dim=64, heads=8, depth=3, n_classes=10), D_SEM, D_MOT).eval()
    _, maps = model(torch.randn(2, 16, D_SEM), torch.randn(2, 4, D_MOT), return_attention=True)
    assert len(maps) == 3
    assert maps[2]["sem_to_mot"].shape == (2, 8, 16, 4) and maps[2]["mot_to_sem"].shape == (2, 8, 4, 16)


def test_backward_reaches_both_streams_and_checkpointing_matches():
    torch.manual_seed(0)
    cfg = FusionConfig(dim=64, heads=8, n_classes=10, dropout=0.0, drop_path=0.0)
    sem, mot = torch.randn(2, 8, D_SEM), torch.randn(2, 3, D_MOT)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        m = build_model(FusionConfig(**{**cfg.__dict__, "grad_checkpointing": ckpt}), D_SEM, D_MOT).train()
        m(sem, mot).pow(2).mean().backward()
        assert m.sem_embed.proj.weight.grad.abs().sum() > 0 and m.mot_embed.proj.weight.grad.abs().sum() > 0
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
