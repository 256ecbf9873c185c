"""Distillation losses against hand-written references, with padding, and their sanity."""

import math

import pytest
import torch

from distill import cross_modal_attention_loss, ground_truth_loss, kl_over_keys, soft_label_loss
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


def test_gradients_reach_every_student_query_and_key():
    """(That none reaches the teacher is dide_loss's job: its teacher runs under no_grad, tested below.)"""
    (t_parts, mask), (s_parts, _) = random_cross(seed=0), random_cross(seed=1)
    s_parts = [p.requires_grad_() for p in s_parts]
    loss = cross_modal_attention_loss(cross_modal_attention(*t_parts, mask), cross_modal_attention(*s_parts, mask), mask)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in s_parts)


def test_padded_keys_give_finite_gradients_to_both_distributions():
    """The loss is safe for a teacher that is trained too (mutual learning, a test's teacher): at a padded
    key both log-probabilities are -inf, and no NaN of -inf - -inf may reach either gradient."""
    (t_parts, mask), (s_parts, _) = random_cross(seed=0), random_cross(seed=1)
    parts = [p.requires_grad_() for p in t_parts + s_parts]
    image_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    teacher, student = (cross_modal_attention(*p, mask, image_mask) for p in (parts[:4], parts[4:]))
    cross_modal_attention_loss(teacher, student, mask, image_mask).backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in parts)


def test_kl_over_keys_handles_fully_masked_extremes():
    log_p = torch.full((1, 1, 2, 3), float("-inf"))
    log_p[..., 0] = 0.0   # all mass on key 0, the others padded
    keys = torch.tensor([[True, False, False]])
    assert kl_over_keys(log_p, log_p, keys, torch.tensor([[True, True]])).item() == 0.0


def test_kl_over_keys_skips_padded_rows_and_keys():
    """A padded query row, even one of -inf and NaN, and padded keys, even at -inf, never enter the mean."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.log_softmax(torch.randn(1, 1, 3, 2, generator=g), -1)          # 2 real keys
    student = torch.log_softmax(torch.randn(1, 1, 3, 2, generator=g), -1)
    by_hand = sum(float(p.exp() @ (p - q)) for p, q in zip(teacher[0, 0, :2], student[0, 0, :2])) / 2
    pad_key = torch.full((1, 1, 3, 1), float("-inf"))
    teacher_padded, student_padded = torch.cat([teacher, pad_key], -1), torch.cat([student, pad_key], -1)
    teacher_padded[0, 0, 2], student_padded[0, 0, 2] = float("-inf"), float("nan")   # row 2: a padded query
    keys, rows = torch.tensor([[True, True, False]]), torch.tensor([[True, True, False]])
    loss = kl_over_keys(teacher_padded, student_padded, keys, rows)
    assert loss.item() == pytest.approx(by_hand, rel=1e-5) and by_hand > 1e-3


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_soft_labels_classification_equals_hand_written_kl(T):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    p, q = torch.softmax(teacher / T, -1), torch.softmax(student / T, -1)
    by_hand = (p * (p.log() - q.log())).sum(-1).mean() * T * T
    torch.testing.assert_close(soft_label_loss("entailment", student, teacher, T), by_hand)
    assert soft_label_loss("entailment", teacher, teacher, T).abs().item() < 1e-6
    assert soft_label_loss("entailment", student, teacher, T).item() > 1e-3   # and positive otherwise


def test_ground_truth_classification_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(4, 3, generator=g), torch.tensor([0, 2, 1, 2])
    by_hand = -sum(math.log(torch.softmax(row, -1)[y]) for row, y in zip(logits, labels.tolist())) / 4
    assert ground_truth_loss("entailment", logits, {"labels": labels}).item() == pytest.approx(by_hand, rel=1e-5)


def test_ground_truth_vqa_is_bce_against_soft_scores_summed_over_answers():
    """ViLT's VQA loss: binary cross entropy against the VQA soft scores, summed over answers, mean over examples."""
    g = torch.Generator().manual_seed(0)
    logits, scores = torch.randn(4, 6, generator=g), torch.tensor([0.0, 0.3, 0.6, 0.9, 1.0, 0.0]).repeat(4, 1)
    q = torch.sigmoid(logits)
    by_hand = sum(-(s * math.log(p) + (1 - s) * math.log(1 - p))
                  for row_s, row_q in zip(scores.tolist(), q.tolist()) for s, p in zip(row_s, row_q)) / 4
    assert ground_truth_loss("vqa", logits, {"vqa_scores": scores}).item() == pytest.approx(by_hand, rel=1e-5)


def test_soft_labels_vqa_is_bce_against_teacher_sigmoids():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    p, q = torch.sigmoid(teacher), torch.sigmoid(student)
    by_hand = -(p * q.log() + (1 - p) * (1 - q).log()).sum(-1).mean()
    torch.testing.assert_close(soft_label_loss("vqa", student, teacher), by_hand)
    # BCE against soft targets is not 0 at student = teacher: its minimum there is the teacher's own entropy
    copy = teacher.clone().requires_grad_(True)
    at_teacher = soft_label_loss("vqa", copy, teacher)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).sum(-1).mean()
    torch.testing.assert_close(at_teacher, entropy)
    at_teacher.backward()
    assert copy.grad.abs().max().item() < 1e-6 and by_hand.item() > entropy.item() + 1e-3


# ----------------------------------------------------------------------------- the whole DiDE objective

from distill import DistillWeights, dide_loss, student_cross_modal_attention  # noqa: E402
from model import DualEncoder, model_config  # noqa: E402
from teacher import IMAGE_TYPE, FusionEncoder, freeze, teacher_cross_modal_attention  # noqa: E402


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


def sharpened(*models, scale=4.0):
    """Freshly initialised models attend almost uniformly and predict almost alike; scaling every weight
    matrix makes their attention and predictions distinct enough for a comparison to tell cases apart."""
    with torch.no_grad():
        for model in models:
            for p in model.parameters():
                if p.dim() >= 2:
                    p.mul_(scale)


@pytest.mark.parametrize("task", ["reasoning", "entailment", "vqa"])
def test_dide_gradients_reach_the_student_and_never_the_teacher(task):
    teacher, student, batch = models_and_batch(task)
    teacher.requires_grad_(True)   # unfreeze: only dide_loss's own no_grad may keep gradients out now
    loss, terms, _ = dide_loss(student, teacher, batch, task, DistillWeights(ground_truth=1.0), (-1, 0))
    loss.backward()
    assert set(terms) == {"soft_label", "attention", "ground_truth"} and torch.isfinite(loss)
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    # every block of both towers gets a gradient from the last layer's attention loss alone
    student.zero_grad()
    _, terms, _ = dide_loss(student, teacher, batch, task, DistillWeights(soft_label=0.0))
    terms["attention"].backward()
    for tower in (student.text_encoder, student.image_encoder):
        assert all(block.attn.qkv.weight.grad.abs().sum() > 0 for block in tower.encoder.blocks)


def test_dide_total_is_the_weighted_sum_of_its_terms():
    teacher, student, batch = models_and_batch("entailment")
    sharpened(teacher, student)
    weights = DistillWeights(soft_label=0.5, attention=2.0, ground_truth=0.25, temperature=2.0)
    with torch.no_grad():
        total, terms, out = dide_loss(student, teacher, batch, "entailment", weights)
        teacher_logits = teacher(batch, "entailment").logits
    torch.testing.assert_close(total, 0.5 * terms["soft_label"] + 2.0 * terms["attention"] + 0.25 * terms["ground_truth"])
    # the temperature reaches the soft labels
    torch.testing.assert_close(terms["soft_label"], soft_label_loss("entailment", out.logits, teacher_logits, 2.0))
    at_one = soft_label_loss("entailment", out.logits, teacher_logits, 1.0)
    assert abs(terms["soft_label"] - at_one) > 0.01 * at_one
    torch.testing.assert_close(terms["ground_truth"], ground_truth_loss("entailment", out.logits, batch))


def test_dide_attention_over_several_layers_is_their_mean():
    teacher, student, batch = models_and_batch("vqa")
    sharpened(teacher, student)
    with torch.no_grad():
        per_layer = [dide_loss(student, teacher, batch, "vqa", DistillWeights(), (layer,))[1]["attention"]
                     for layer in (-1, 0)]
        both = dide_loss(student, teacher, batch, "vqa", DistillWeights(), (-1, 0))[1]["attention"]
    torch.testing.assert_close(both, (per_layer[0] + per_layer[1]) / 2)
    assert abs(per_layer[0] - per_layer[1]) > 0.01 * per_layer[0]


def test_dide_attention_pairs_each_image_with_its_own_teacher_pass():
    """Reasoning: the student's towers on image k alone against the teacher's joint pass over image k,
    summed over the two images; pairing image 0 with the teacher's image 1 gives another number."""
    teacher, student, batch = models_and_batch("reasoning")
    sharpened(teacher, student)
    ids, mask = batch["text_ids"], batch["text_mask"]
    with torch.no_grad():
        _, terms, _ = dide_loss(student, teacher, batch, "reasoning", DistillWeights(soft_label=0.0))
        text = student.encode_text(ids, mask, details_from=(-1,)).attention_at(-1)
        losses = {}
        for k in range(2):
            image = student.encode_image(batch["images"][:, k], None, details_from=(-1,))
            student_k = cross_modal_attention(text.queries, text.keys, image.attention_at(-1).queries,
                                              image.attention_at(-1).keys, mask, image.mask)
            for t in range(2):   # the teacher's pass over image t, with its own modality type (1 or 2)
                fused = teacher.fuse(ids, mask, batch["images"][:, t], IMAGE_TYPE + t, details_from=(-1,))
                losses[k, t] = cross_modal_attention_loss(teacher_cross_modal_attention(fused, -1, mask),
                                                          student_k, mask)
    torch.testing.assert_close(terms["attention"], losses[0, 0] + losses[1, 1])
    assert abs(terms["attention"] - (losses[0, 1] + losses[1, 0])) > 0.01 * terms["attention"]


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


def test_mean_over_global_batch_in_one_process_is_the_plain_mean_and_counts_of_zero_divide_by_one():
    """One process: total / count (tests/test_processes.py checks two processes against one)."""
    from distill import mean_over_global_batch
    total = torch.tensor(6.0, requires_grad=True)
    mean = mean_over_global_batch(total, torch.tensor(4))
    assert mean.item() == 1.5
    mean.backward()
    assert total.grad.item() == 0.25
    assert mean_over_global_batch(torch.tensor(0.0), torch.tensor(0)).item() == 0.0   # nothing masked: 0, not NaN
    assert mean_over_global_batch(torch.tensor(6.0), 3).item() == 2.0                 # a number of examples


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])   # .ci/gpu runs this test on the GPU


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pixel_mask", [False, True], ids=["benchmark", "photographs"])
@pytest.mark.parametrize("task", ["reasoning", "entailment", "vqa"])
def test_an_empty_shard_trains_with_zero_loss_and_zero_gradients(task, pixel_mask, device):
    """Under DDP with real data, a process whose rows are all unreadable still takes its step with B = 0
    (loader.LoaderBatches; its images are then (0, K, patch, patch), with a pixel mask): both models run
    (on CUDA under bf16 autocast, as in training), every loss term is 0 and every gradient is zero."""
    teacher, student, batch = models_and_batch(task)
    teacher, student = teacher.to(device), student.to(device)
    empty = {key: value[:0].to(device) for key, value in batch.items()}
    if pixel_mask:   # loader.collate of a batch without a readable image: one patch of black
        K, p = batch["images"].shape[1], student.config.patch_size
        empty["images"] = torch.zeros(0, K, 3, p, p, device=device)
        empty["pixel_mask"] = torch.zeros(0, K, p, p, dtype=torch.bool, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        loss, terms, _ = dide_loss(student, teacher, empty, task, DistillWeights(ground_truth=1.0))
    loss.backward()
    assert set(terms) == {"soft_label", "attention", "ground_truth"}
    assert all(value.item() == 0.0 for value in terms.values())
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert len(grads) > len(list(student.parameters())) // 2   # the towers and this task's head have gradients
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
