"""Distillation losses against hand-written references, with padding, and their sanity."""

import math

import pytest
import torch

from distill import cross_modal_attention_loss, kl_over_keys, soft_label_loss
from teacher import cross_modal_attention


def random_cross(B=3, nh=2, Lt=6, Nv=5, hs=4, seed=0, text_mask=None):
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randn(B, nh, n, hs, generator=g) * 2 for n in (Lt, Lt, Nv, Nv)]
    if text_mask is None:
        text_mask = torch.arange(Lt)[None, :] < torch.tensor([Lt, 3, 1][:B])[:, None]
    return parts, text_mask


def reference_cad(t_parts, s_parts, text_mask, image_mask=None):
    """The same loss as plain Python loops over examples, heads and rows."""
    def softmax(scores):
        e = [math.exp(x - max(scores)) for x in scores]
        return [x / sum(e) for x in e]

    def dist(q, k, keys):
        return softmax([float(q @ k[j]) / math.sqrt(q.shape[0]) for j in keys])

    (tq, tk, iq, ik), (sq, sk, sq_i, sk_i) = t_parts, s_parts
    B, nh, Lt, _ = tq.shape
    Nv = iq.shape[2]
    t2i, i2t = [], []
    for b in range(B):
        words = [j for j in range(Lt) if text_mask[b, j]]
        patches = [j for j in range(Nv) if image_mask is None or image_mask[b, j]]
        for h in range(nh):
            for i in words:   # text-to-image: rows of real words, real image keys
                p, q = dist(tq[b, h, i], ik[b, h], patches), dist(sq[b, h, i], sk_i[b, h], patches)
                t2i.append(sum(pj * (math.log(pj) - math.log(qj)) for pj, qj in zip(p, q)))
            for i in patches:   # image-to-text: real image rows, real word keys
                p, q = dist(iq[b, h, i], tk[b, h], words), dist(sq_i[b, h, i], sk[b, h], words)
                i2t.append(sum(pj * (math.log(pj) - math.log(qj)) for pj, qj in zip(p, q)))
    return sum(t2i) / len(t2i) + sum(i2t) / len(i2t)


def test_cad_equals_hand_written_reference_with_padding():
    (t_parts, mask), (s_parts, _) = random_cross(seed=0), random_cross(seed=1)
    loss = cross_modal_attention_loss(cross_modal_attention(*t_parts, mask), cross_modal_attention(*s_parts, mask), mask)
    assert loss.item() == pytest.approx(reference_cad(t_parts, s_parts, mask), rel=1e-4)


def test_cad_equals_hand_written_reference_with_padded_patches():
    """Real photographs padded to the batch's largest: padded patches are neither keys nor rows."""
    (t_parts, mask), (s_parts, _) = random_cross(seed=0), random_cross(seed=1)
    image_mask = torch.arange(5)[None, :] < torch.tensor([5, 2, 3])[:, None]   # (B, Nv)
    loss = cross_modal_attention_loss(cross_modal_attention(*t_parts, mask, image_mask),
                                      cross_modal_attention(*s_parts, mask, image_mask), mask, image_mask)
    assert loss.item() == pytest.approx(reference_cad(t_parts, s_parts, mask, image_mask), rel=1e-4)
    unmasked = cross_modal_attention_loss(cross_modal_attention(*t_parts, mask),
                                          cross_modal_attention(*s_parts, mask), mask)
    assert abs(unmasked.item() - loss.item()) > 1e-3   # the reference is not blind to the mask


def test_cad_under_bf16_autocast_is_the_fp32_loss():
    """Under autocast (bf16 training, the GPU default) the cross-modal logits stay fp32: the loss equals
    the hand-written reference, and two near-equal distributions never give a negative KL."""
    (t_parts, mask), (s_parts, _) = random_cross(seed=0), random_cross(seed=1)
    near = [p + 1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) for p in t_parts]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cross_modal_attention_loss(cross_modal_attention(*t_parts, mask),
                                          cross_modal_attention(*s_parts, mask), mask)
        close = cross_modal_attention_loss(cross_modal_attention(*t_parts, mask),
                                           cross_modal_attention(*near, mask), mask)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_cad(t_parts, s_parts, mask), rel=1e-4)
    assert 0 <= close.item() < 1e-4


def test_cad_is_zero_for_identical_attention_and_positive_otherwise():
    (parts, mask), (other, _) = random_cross(seed=0), random_cross(seed=1)
    same = cross_modal_attention(*parts, mask)
    assert cross_modal_attention_loss(same, same, mask).abs().item() < 1e-6
    assert cross_modal_attention_loss(same, cross_modal_attention(*other, mask), mask).item() > 1e-3


def test_padded_keys_and_rows_never_matter_and_never_give_nan():
    parts, mask = random_cross(seed=0, text_mask=torch.tensor([[True, False, False, False, False, False]] * 3))
    other, _ = random_cross(seed=1)
    teacher, student = cross_modal_attention(*parts, mask), cross_modal_attention(*other, mask)
    loss = cross_modal_attention_loss(teacher, student, mask)
    assert torch.isfinite(loss)
    # change the student's queries and keys at padded word positions: the loss must not move
    changed = [t.clone() for t in other]
    changed[0][:, :, 1:] += 100.0
    changed[1][:, :, 1:] -= 100.0
    moved = cross_modal_attention_loss(teacher, cross_modal_attention(*changed, mask), mask)
    torch.testing.assert_close(loss, moved)


def test_gradients_reach_the_student_only():
    (t_parts, mask), (s_parts, _) = random_cross(seed=0), random_cross(seed=1)
    s_parts = [p.requires_grad_() for p in s_parts]
    loss = cross_modal_attention_loss(cross_modal_attention(*t_parts, mask), cross_modal_attention(*s_parts, mask), mask)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in s_parts)
    assert all(p.grad is None for p in t_parts)


def test_kl_over_keys_handles_fully_masked_extremes():
    log_p = torch.full((1, 1, 2, 3), float("-inf"))
    log_p[..., 0] = 0.0   # all mass on key 0, the others padded
    keys = torch.tensor([[True, False, False]])
    assert kl_over_keys(log_p, log_p, keys, torch.tensor([[True, True]])).item() == 0.0


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_soft_labels_classification_equals_hand_written_kl(T):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    p, q = torch.softmax(teacher / T, -1), torch.softmax(student / T, -1)
    by_hand = (p * (p.log() - q.log())).sum(-1).mean() * T * T
    torch.testing.assert_close(soft_label_loss("entailment", student, teacher, T), by_hand)
    assert soft_label_loss("entailment", teacher, teacher, T).abs().item() < 1e-6


def test_soft_labels_vqa_is_bce_against_teacher_sigmoids():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    p, q = torch.sigmoid(teacher), torch.sigmoid(student)
    by_hand = -(p * q.log() + (1 - p) * (1 - q).log()).sum(-1).mean()
    torch.testing.assert_close(soft_label_loss("vqa", student, teacher), by_hand)


# ----------------------------------------------------------------------------- the whole DiDE objective

from distill import DistillWeights, dide_loss, student_cross_modal_attention  # noqa: E402
from model import DualEncoder, model_config  # noqa: E402
from teacher import FusionEncoder, freeze, teacher_cross_modal_attention  # noqa: E402


def models_and_batch(task, lengths=(9, 4, 1)):
    torch.manual_seed(0)
    cfg = model_config("tiny", vocab_size=40, num_answers=6)
    teacher, student = freeze(FusionEncoder(cfg)), DualEncoder(cfg)
    B, L, K = len(lengths), 9, 2 if task == "reasoning" else 1
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    batch = {"images": torch.randn(B, K, 3, 32, 32), "text_ids": torch.randint(5, 40, (B, L)) * mask,
             "text_mask": mask, "labels": torch.zeros(B, dtype=torch.long),
             "vqa_scores": torch.zeros(B, 6)}
    return teacher, student, batch


@pytest.mark.parametrize("task", ["reasoning", "entailment", "vqa"])
def test_dide_gradients_reach_the_student_and_never_the_teacher(task):
    teacher, student, batch = models_and_batch(task)
    loss, terms, _ = dide_loss(student, teacher, batch, task, DistillWeights(ground_truth=1.0), (-1, 0))
    loss.backward()
    assert set(terms) == {"soft_label", "attention", "ground_truth"} and torch.isfinite(loss)
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    # every tower block up to the distilled layer gets a gradient from the attention loss alone
    student.zero_grad()
    _, terms, _ = dide_loss(student, teacher, batch, task, DistillWeights(soft_label=0.0))
    terms["attention"].backward()
    for tower in (student.text_encoder, student.image_encoder):
        assert tower.encoder.blocks[-1].attn.qkv.weight.grad.abs().sum() > 0


def test_dide_attention_sums_over_both_images_of_a_pair():
    teacher, student, batch = models_and_batch("reasoning")
    with torch.no_grad():
        _, terms, out = dide_loss(student, teacher, batch, "reasoning", DistillWeights(soft_label=0.0))
        fusion = teacher(batch, "reasoning", details_from=(-1,)).fusion
    mask = batch["text_mask"]
    by_hand = sum(cross_modal_attention_loss(teacher_cross_modal_attention(fusion[k], -1, mask),
                                             student_cross_modal_attention(out, -1, k, mask), mask) for k in range(2))
    torch.testing.assert_close(terms["attention"], by_hand)


@pytest.mark.parametrize("task", ["reasoning", "vqa"])
def test_dide_loss_ignores_image_padding(task):
    """Padding an example's images with extra patches (and saying so in pixel_mask) changes no term."""
    teacher, student, batch = models_and_batch(task, lengths=(9,))
    _, terms, _ = dide_loss(student, teacher, batch, task, DistillWeights(ground_truth=1.0))
    K = batch["images"].shape[1]
    images = torch.zeros(1, K, 3, 48, 40)
    images[..., :32, :32] = batch["images"]
    pixel_mask = torch.zeros(1, K, 48, 40, dtype=torch.bool)
    pixel_mask[..., :32, :32] = True
    _, padded, _ = dide_loss(student, teacher, {**batch, "images": images, "pixel_mask": pixel_mask}, task,
                             DistillWeights(ground_truth=1.0))
    for name in terms:
        torch.testing.assert_close(padded[name], terms[name], atol=1e-5, rtol=1e-5)


def test_dide_has_no_nan_under_extreme_padding():
    teacher, student, batch = models_and_batch("vqa", lengths=(1, 1, 1))   # only [CLS] is real
    loss, terms, _ = dide_loss(student, teacher, batch, "vqa", DistillWeights())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
