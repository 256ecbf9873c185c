"""The transformer, the student and the teacher: maths against PyTorch's own operators, masks, shapes."""

import math

import pytest
import torch
import torch.nn.functional as F

from model import MODEL_SIZES, Attention, DualEncoder, ModelConfig, count_parameters, model_config
from teacher import FusionEncoder, cross_modal_attention, freeze, teacher_cross_modal_attention

TASK_CLASSES = {"reasoning": 2, "entailment": 3, "vqa": 7}


def tiny_config(**overrides):
    return model_config("tiny", vocab_size=50, num_answers=7, **overrides)


def random_batch(cfg, task, B=3, L=9, generator=None):
    g = generator or torch.Generator().manual_seed(0)
    K = 2 if task == "reasoning" else 1
    lengths = torch.tensor([L, 4, 2][:B])                       # row 0 full, the others padded
    text_mask = torch.arange(L)[None, :] < lengths[:, None]      # (B, L)
    text_ids = torch.randint(5, cfg.vocab_size, (B, L), generator=g) * text_mask
    images = torch.randn(B, K, 3, cfg.image_size, cfg.image_size, generator=g)
    return {"images": images, "text_ids": text_ids, "text_mask": text_mask}


def pad_more(batch, extra):
    """The same batch with `extra` more [PAD] positions at the end of every text."""
    B = batch["text_ids"].shape[0]
    return {**batch,
            "text_ids": torch.cat([batch["text_ids"], torch.zeros(B, extra, dtype=torch.long)], 1),
            "text_mask": torch.cat([batch["text_mask"], torch.zeros(B, extra, dtype=torch.bool)], 1)}


@pytest.mark.parametrize("want_probs", [False, True])
def test_attention_equals_scaled_dot_product_attention(want_probs):
    torch.manual_seed(0)
    cfg = ModelConfig(n_embd=32, n_head=4)
    attn = Attention(cfg).eval()
    B, T, C = 2, 7, 32
    x = torch.randn(B, T, C)
    key_mask = torch.ones(B, T, dtype=torch.bool)
    key_mask[1, 4:] = False
    y, details = attn(x, key_mask, want_qk=True, want_probs=want_probs)
    # independent reference: PyTorch's own multi-head attention maths, heads done by hand
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(C, dim=2)
    heads = lambda t: t.view(B, T, 4, 8).transpose(1, 2)
    ref = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=key_mask[:, None, None, :])
    ref = ref.transpose(1, 2).reshape(B, T, C) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(details.queries, heads(q))
    if want_probs:
        probs = details.probs
        torch.testing.assert_close(probs.sum(-1), torch.ones(B, 4, T))
        assert (probs[1, :, :, 4:] == 0).all(), "masked keys must get zero attention"
        manual = (heads(q) @ heads(k).transpose(-2, -1) / math.sqrt(8)).masked_fill(
            ~key_mask[:, None, None, :], float("-inf")).softmax(-1)
        torch.testing.assert_close(probs, manual)
    else:
        assert details.probs is None


@pytest.mark.parametrize("Model", [DualEncoder, FusionEncoder])
def test_an_empty_batch_never_reaches_the_fused_kernel(Model, monkeypatch):
    """B = 0 (an empty DDP shard) takes the written-out attention: flash and cuDNN kernels have refused
    a batch of 0 (pytorch/pytorch#133780). Here the fused function refuses it as they do."""
    fused, batch_sizes = F.scaled_dot_product_attention, []

    def refusing_empty_batches(q, *args, **kwargs):
        batch_sizes.append(q.shape[0])
        if q.shape[0] == 0:
            raise RuntimeError("batch size must be positive")
        return fused(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", refusing_empty_batches)
    cfg = tiny_config()
    model = Model(cfg).train()
    batch = random_batch(cfg, "reasoning")
    out = model({key: value[:0] for key, value in batch.items()}, "reasoning", details_from=(-1,))
    assert out.logits.shape == (0, 2)
    out.logits.sum().backward()   # and back: every gradient an empty sum, zero
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.equal(g, torch.zeros_like(g)) for g in grads)
    assert batch_sizes == []
    model(batch, "reasoning")   # a real batch still takes the fused path, in every layer
    assert len(batch_sizes) == 2 * cfg.n_layer   # two towers, or the teacher's pass over each image


@pytest.mark.parametrize("Model", [DualEncoder, FusionEncoder])
@pytest.mark.parametrize("task", list(TASK_CLASSES))
def test_heads_output_shapes(Model, task):
    cfg = tiny_config()
    model = Model(cfg).eval()
    out = model(random_batch(cfg, task), task)
    assert out.logits.shape == (3, TASK_CLASSES[task])
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("Model", [DualEncoder, FusionEncoder])
@pytest.mark.parametrize("task", ["reasoning", "vqa"])
def test_padding_never_changes_the_answer(Model, task):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = Model(cfg).eval()
    batch = random_batch(cfg, task)
    with torch.no_grad():
        out = model(batch, task, details_from=(-1,), hidden_states=True)
        padded = model(pad_more(batch, 6), task, details_from=(-1,), hidden_states=True)
    torch.testing.assert_close(out.logits, padded.logits, atol=1e-5, rtol=1e-5)
    L = batch["text_ids"].shape[1]
    mask = batch["text_mask"][:, :, None]
    if Model is DualEncoder:
        real, real_padded = out.text.hidden * mask, padded.text.hidden[:, :L] * mask
        torch.testing.assert_close(out.image.hidden, padded.image.hidden, atol=1e-5, rtol=1e-5)
    else:   # joint sequence: text positions, then image positions, which shift by the extra padding
        real, real_padded = out.fusion[0].hidden[:, :L] * mask, padded.fusion[0].hidden[:, :L] * mask
        torch.testing.assert_close(out.fusion[0].hidden[:, L:], padded.fusion[0].hidden[:, L + 6:],
                                   atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(real, real_padded, atol=1e-5, rtol=1e-5)


def pad_images(images):
    """Images of different sizes, each (K, 3, H, W), padded at the bottom and right into one batch:
    (B, K, 3, H_max, W_max) and the pixel mask, bool (B, K, H_max, W_max)."""
    H, W = max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)
    batch = torch.zeros(len(images), images[0].shape[0], 3, H, W)
    mask = torch.zeros(len(images), images[0].shape[0], H, W, dtype=torch.bool)
    for b, image in enumerate(images):
        batch[b, :, :, : image.shape[-2], : image.shape[-1]] = image
        mask[b, :, : image.shape[-2], : image.shape[-1]] = True
    return batch, mask


@pytest.mark.parametrize("Model", [DualEncoder, FusionEncoder])
@pytest.mark.parametrize("task", ["reasoning", "vqa"])
def test_image_padding_never_changes_the_answer(Model, task):
    """Photographs of different sizes share a batch padded to the largest: each example's answer
    must equal the one it gets alone, at its own size (its own interpolated positions)."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = Model(cfg).eval()
    batch = random_batch(cfg, task)
    K = batch["images"].shape[1]
    sizes = [(24, 40), (32, 32), (16, 8)]                         # (H, W) of each example, patch 8
    images = [torch.randn(K, 3, h, w) for h, w in sizes]
    padded, pixel_mask = pad_images(images)
    with torch.no_grad():
        together = model({**batch, "images": padded, "pixel_mask": pixel_mask}, task).logits
        alone = [model({**{key: value[b:b + 1] for key, value in batch.items()}, "images": images[b][None]},
                       task).logits for b in range(3)]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-5)
    # the padding mask of the square example is all ones: the same as no mask at all
    with torch.no_grad():
        square = model({**{key: value[1:2] for key, value in batch.items()}, "images": images[1][None],
                        "pixel_mask": torch.ones(1, K, 32, 32, dtype=torch.bool)}, task).logits
    torch.testing.assert_close(square, alone[1], atol=1e-6, rtol=1e-6)


def test_position_embeddings_interpolate_to_other_grids():
    torch.manual_seed(0)
    embed = DualEncoder(tiny_config()).image_encoder.embed
    side = embed.image_size // embed.patch_size                    # 4
    grid = embed.position[0, 1:].view(side, side, -1)
    assert torch.equal(embed.grid_positions(side, side).view(side, side, -1), grid)
    wide = embed.grid_positions(side, 7).view(side, 7, -1)        # a wider photograph
    # align_corners=True: the four corner patches keep their own embeddings
    for r, c, rr, cc in [(0, 0, 0, 0), (0, 6, 0, side - 1), (side - 1, 0, side - 1, 0), (side - 1, 6, side - 1, side - 1)]:
        torch.testing.assert_close(wide[r, c], grid[rr, cc])
    wide.sum().backward()                                         # interpolated positions still learn
    assert embed.position.grad[0, 1:].abs().sum() > 0
    # a padded batch samples every image's grid at once (grid_sample): the same as one by one
    rows, cols = torch.tensor([1, 4, 3, 6]), torch.tensor([5, 4, 1, 2])
    together = embed.sampled_positions(rows, cols, 6, 5).view(4, 6, 5, -1)
    for b, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        torch.testing.assert_close(together[b, :r, :c], embed.grid_positions(r, c).view(r, c, -1), atol=1e-6, rtol=1e-5)


def test_student_towers_do_not_see_the_other_modality():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = DualEncoder(cfg).eval()
    batch = random_batch(cfg, "vqa")
    other_images = {**batch, "images": torch.randn_like(batch["images"])}
    other_text = {**batch, "text_ids": torch.randint_like(batch["text_ids"], 5, cfg.vocab_size) * batch["text_mask"]}
    with torch.no_grad():
        a, b, c = model(batch, "vqa"), model(other_images, "vqa"), model(other_text, "vqa")
    torch.testing.assert_close(a.text.hidden, b.text.hidden)      # other images: the same text features
    torch.testing.assert_close(a.image.hidden, c.image.hidden)    # other words: the same image features
    assert not torch.allclose(a.image.hidden, b.image.hidden) and not torch.allclose(a.text.hidden, c.text.hidden)


def test_details_only_for_the_layers_asked():
    cfg = tiny_config(n_layer=3)
    model = FusionEncoder(cfg).eval()
    batch = random_batch(cfg, "entailment")
    out = model(batch, "entailment", details_from=(0, -1), hidden_states=True)
    fused = out.fusion[0]
    assert sorted(fused.attention) == [0, 2]
    assert fused.attention[2].probs is None             # q and k only unless probabilities are asked for
    assert len(fused.hidden_states) == 4
    plain = model(batch, "entailment").fusion[0]
    assert plain.attention == {} and plain.hidden_states is None
    with pytest.raises(ValueError, match="details_from"):
        model(batch, "entailment", details_from=(3,))


def test_teacher_block_softmax_equals_renormalised_joint_rows():
    torch.manual_seed(0)
    cfg = tiny_config()
    teacher = FusionEncoder(cfg).eval()
    batch = random_batch(cfg, "vqa")
    with torch.no_grad():
        fused = teacher(batch, "vqa", details_from=(-1,), attention_probs=True).fusion[0]
    mask = batch["text_mask"]
    L = mask.shape[1]
    cross = teacher_cross_modal_attention(fused, -1, mask)
    joint = fused.attention_at(-1).probs                      # (B, nh, L + Nv, L + Nv)
    t2i = joint[:, :, :L, L:]
    i2t = joint[:, :, L:, :L]
    torch.testing.assert_close(cross.text_to_image, t2i / t2i.sum(-1, keepdim=True), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cross.image_to_text, i2t / i2t.sum(-1, keepdim=True), atol=1e-5, rtol=1e-4)
    assert (cross.image_to_text[1, :, :, 4:] == 0).all()   # padded words get no attention


def test_cross_modal_attention_shapes_for_the_student():
    torch.manual_seed(0)
    cfg = tiny_config()
    student = DualEncoder(cfg).eval()
    batch = random_batch(cfg, "vqa")
    out = student(batch, "vqa", details_from=(-1,))
    t, v = out.text.attention_at(-1), out.image.attention_at(-1)
    cross = cross_modal_attention(t.queries, t.keys, v.queries, v.keys, batch["text_mask"])
    Nv = 1 + cfg.num_patches
    assert cross.text_to_image.shape == (3, cfg.n_head, 9, Nv)
    assert cross.image_to_text.shape == (3, cfg.n_head, Nv, 9)


def test_freeze_makes_the_teacher_inert():
    teacher = freeze(FusionEncoder(tiny_config()).train())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_bad_inputs_are_named():
    cfg = tiny_config()
    model = DualEncoder(cfg)
    batch = random_batch(cfg, "vqa")
    with pytest.raises(ValueError, match="unknown task"):
        model(batch, "captioning")
    with pytest.raises(ValueError, match="image"):
        model(batch, "reasoning")                               # one image given, two needed
    with pytest.raises(ValueError, match="images must be"):
        model({**batch, "images": batch["images"][..., :12, :12]}, "vqa")     # not whole patches
    with pytest.raises(ValueError, match="pixel_mask must be"):
        model({**batch, "pixel_mask": torch.ones(3, 1, 16, 16, dtype=torch.bool)}, "vqa")
    with pytest.raises(ValueError, match="max_text_len"):
        model(pad_more(batch, cfg.max_text_len), "vqa")
    with pytest.raises(ValueError, match="unknown model size"):
        model_config("huge")
    with pytest.raises(ValueError, match="n_head"):
        model_config("tiny", n_head=3)


def test_named_sizes_match_the_papers():
    assert set(MODEL_SIZES) == {"tiny", "mini", "small", "vilt-b32"}
    cfg = model_config("vilt-b32", vocab_size=30522, num_answers=3129)
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.mlp_ratio * cfg.n_embd) == (12, 768, 12, 3072)
    assert (cfg.patch_size, cfg.image_size, cfg.max_text_len) == (32, 384, 40)
    with torch.device("meta"):
        teacher = FusionEncoder(cfg)
    # ViLT-B/32 has about 87 M parameters in its transformer and embeddings (task and MLM heads excluded)
    body = count_parameters(teacher) - count_parameters(teacher.heads) - count_parameters(teacher.mlm_head)
    assert 105e6 < body < 120e6    # 85 M blocks + 23 M word embeddings of a BERT vocabulary + pooler


def test_compile_keeps_a_graph_for_every_variant_of_the_teachers_forward_that_a_table_meets():
    """The default table calls FusionEncoder.forward in 11 ways (4 trained stages; frozen, with and without
    attention details, for each task). torch.compile keeps 8 per function by default and runs the rest
    eagerly; runtime.allow_compiled_variants (trainer.fit, --compile) keeps them all. Dynamo's own
    eager backend: no code generation, so this stays quick."""
    cache_entries = getattr(pytest.importorskip("torch._dynamo.eval_frame"), "_debug_get_cache_entry_list", None)
    if cache_entries is None:
        pytest.skip("this torch cannot list dynamo's cache entries")
    from runtime import allow_compiled_variants
    from teacher import FusionEncoder, freeze
    cfg = model_config("tiny", vocab_size=40)
    trained, frozen = FusionEncoder(cfg), freeze(FusionEncoder(cfg))
    B, L = 2, 6

    def batch(images):
        return {"images": torch.randn(B, images, 3, cfg.image_size, cfg.image_size),
                "text_ids": torch.randint(5, 40, (B, L)), "text_mask": torch.ones(B, L, dtype=torch.bool),
                "mlm_text_ids": torch.randint(5, 40, (B, L)), "mlm_text_mask": torch.ones(B, L, dtype=torch.bool)}
    images = {"itm": 1, "reasoning": 2, "entailment": 1, "vqa": 1}
    limit = torch._dynamo.config.cache_size_limit
    torch._dynamo.reset()
    try:
        allow_compiled_variants()
        for task in images:                                    # each stage compiles the model it trains
            torch.compile(trained, backend="eager")(batch(images[task]), task)
        for task in images:                                    # the frozen teacher of each distilled row
            for details in ({}, {"details_from": (-1,)}) if task != "itm" else ({"details_from": (-1,)},):
                with torch.no_grad():
                    torch.compile(frozen, backend="eager")(batch(images[task]), task, **details)
        assert len(cache_entries(FusionEncoder.forward.__code__)) == 11
    finally:
        torch._dynamo.reset()
        torch._dynamo.config.cache_size_limit = limit
