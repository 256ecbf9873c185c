"""evaluate.attention_agreement: the teacher's attention entropy and a student's KL from it,
against hand-written sums and the training loss, unchanged by padding and by batching."""

import math
from dataclasses import replace

import pytest
import torch

from batches import make_batch
from data import Tokenizer, TaskSplit
from distill import DistillWeights, dide_loss
from evaluate import attention_agreement, entropy_rows, evaluate
from model import DualEncoder, model_config
from runtime import Runtime
from teacher import FusionEncoder, freeze
from train import TrainConfig

CPU = torch.device("cpu")


def test_entropy_rows_equals_a_hand_written_sum_over_valid_keys():
    g = torch.Generator().manual_seed(0)
    key_mask = torch.tensor([[True, True, True, False], [True, False, False, False]])     # (B, K)
    scores = torch.randn(2, 3, 5, 4, generator=g).masked_fill(~key_mask[:, None, None, :], float("-inf"))
    got = entropy_rows(scores.log_softmax(-1), key_mask)                                  # (B, nh, Q)
    for b in range(2):
        keys = [j for j in range(4) if key_mask[b, j]]
        for h in range(3):
            for q in range(5):
                e = [math.exp(scores[b, h, q, j].item()) for j in keys]
                p = [x / sum(e) for x in e]
                assert got[b, h, q].item() == pytest.approx(-sum(x * math.log(x) for x in p), abs=1e-5)
    assert torch.all(got[1] == 0)                                                         # one key: no uncertainty
    uniform = torch.zeros(1, 1, 1, 4)
    assert entropy_rows(uniform.log_softmax(-1), torch.ones(1, 4, dtype=torch.bool)).item() == pytest.approx(math.log(4))


def split_and_models(task="entailment", n=10, seed=0, lengths=None):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cfg = model_config("tiny", vocab_size=40, num_answers=6)
    K, L = (2 if task == "reasoning" else 1), 9
    lengths = torch.randint(1, L + 1, (n,), generator=g) if lengths is None else torch.tensor(lengths)
    text_ids = torch.randint(5, 40, (n, L), generator=g) * (torch.arange(L)[None, :] < lengths[:, None])
    split = TaskSplit(task, images=torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8, generator=g),
                      image_index=torch.randint(0, 6, (n, K), generator=g), text_ids=text_ids,
                      labels=torch.zeros(n, dtype=torch.long), family=torch.zeros(n, dtype=torch.long),
                      family_names=["all"], texts=[""] * n)
    return split, freeze(FusionEncoder(cfg)), DualEncoder(cfg)


def test_the_kl_is_the_attention_loss_term_and_entropies_are_fractions_of_uniform():
    split, teacher, student = split_and_models()
    report = attention_agreement(teacher, student, split, "entailment", TrainConfig(size="tiny"), CPU)
    batch = make_batch(split, torch.arange(len(split)))
    with torch.no_grad():
        _, terms, _ = dide_loss(student, teacher, batch, "entailment", DistillWeights(soft_label=0.0))
    total = report["text_to_image"]["kl"] + report["image_to_text"]["kl"]
    assert total == pytest.approx(terms["attention"].item(), rel=1e-4) and total > 0
    for direction in report.values():
        assert 0 < direction["teacher_entropy"] <= 1 and 0 < direction["student_entropy"] <= 1


@pytest.mark.parametrize("task", ["entailment", "reasoning"])
def test_batching_and_text_padding_change_nothing(task):
    split, teacher, student = split_and_models(task)
    whole = attention_agreement(teacher, student, split, task, TrainConfig(size="tiny", eval_batch_size=64), CPU)
    in_threes = attention_agreement(teacher, student, split, task, TrainConfig(size="tiny", eval_batch_size=3), CPU)
    padded_ids = torch.cat([split.text_ids, torch.full((len(split), 4), Tokenizer.PAD)], dim=1)
    padded = attention_agreement(teacher, student, TaskSplit(**{**split.__dict__, "text_ids": padded_ids}), task,
                                 TrainConfig(size="tiny"), CPU)
    for other in (in_threes, padded):
        for direction, values in whole.items():
            for key, value in values.items():
                assert other[direction][key] == pytest.approx(value, rel=1e-4), (direction, key)


def test_only_the_first_examples_are_read_and_modes_are_kept():
    split, teacher, student = split_and_models(n=10)
    cfg = TrainConfig(size="tiny")
    first_four = attention_agreement(teacher, student, split, "entailment", cfg, CPU, examples=4)
    cut = split.select(torch.arange(len(split)) < 4)
    assert first_four == attention_agreement(teacher, student, cut, "entailment", cfg, CPU)
    assert student.training and not teacher.training
    teacher_only = attention_agreement(teacher, None, split, "entailment", cfg, CPU)
    assert set(teacher_only["text_to_image"]) == {"teacher_entropy"}


def test_entailment_accuracy_with_and_without_a_curtain_is_counted_by_hand():
    split, teacher, _ = split_and_models(n=10)
    with torch.no_grad():
        predicted = teacher(make_batch(split, torch.arange(10)), "entailment").logits.argmax(-1)   # (10,)
    curtain = torch.tensor([True, False] * 5)
    # labels right on 4 of the 5 images with a curtain and on 1 of the 5 without: 80 and 20
    right = torch.tensor([True, False, True, False, True, True, True, False, False, False])
    split = replace(split, labels=torch.where(right, predicted, (predicted + 1) % 3), curtain=curtain)
    cfg, rt = TrainConfig(size="tiny"), Runtime(CPU, log=None)
    scores = evaluate(teacher, split, "entailment", cfg, rt)
    assert scores["per_family"]["image with curtain"] == pytest.approx(80.0)
    assert scores["per_family"]["image without curtain"] == pytest.approx(20.0)
    assert scores["accuracy"] == pytest.approx(50.0)
    only_curtained = evaluate(teacher, split.select(split.curtain), "entailment", cfg, rt)
    assert "image without curtain" not in only_curtained["per_family"]   # no row of no examples
    no_flag = evaluate(teacher, replace(split, curtain=None), "entailment", cfg, rt)   # e.g. reasoning, VQA
    assert "image with curtain" not in no_flag["per_family"]


def test_evaluation_gives_each_model_back_its_mode():
    """evaluate and evaluate_itm run in eval mode, then give the mode back: a frozen teacher stays in
    eval mode (dropout off for the student it teaches next), a student in training goes on training."""
    from evaluate import evaluate_itm
    from pretrain import itm_validation_batches
    split, teacher, student = split_and_models(n=10)
    cfg, rt = TrainConfig(size="tiny"), Runtime(CPU, log=None)
    for model, training in ((teacher, False), (student, True)):
        model.train(training)
        evaluate(model, split, "entailment", cfg, rt)
        assert model.training is training
    from data import CaptionSplit
    captions = CaptionSplit(images=split.images, text_ids=split.text_ids[:6], swapped_ids=split.text_ids[:6].flip(1),
                            texts=[""] * 6)
    batches = itm_validation_batches(captions, Tokenizer(["a"]), 4, CPU)
    for model, training in ((teacher, False), (student, True)):
        model.train(training)
        evaluate_itm(model, batches, cfg, CPU)
        assert model.training is training


def test_a_model_gets_its_mode_back_when_evaluation_raises():
    """A stop (Ctrl-C, an unreadable image) in the middle of an evaluation must not leave a student in
    training in eval mode (dropout off for the rest of its training), nor a frozen teacher in train mode."""
    from runtime import eval_mode
    split, teacher, student = split_and_models(n=10)
    cfg, rt = TrainConfig(size="tiny"), Runtime(CPU, log=None)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    for model, training in ((teacher, False), (student, True)):
        model.train(training)
        model.forward = stopped
        with pytest.raises(KeyboardInterrupt):
            evaluate(model, split, "entailment", cfg, rt)
        assert model.training is training
    teacher.train(False), student.train(True)
    with pytest.raises(ValueError), eval_mode(teacher, None, student):   # None: no student, as attention_agreement passes
        assert not teacher.training and not student.training
        raise ValueError
    assert not teacher.training and student.training
