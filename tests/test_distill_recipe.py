"""The distillation recipe: the teacher-similarity loss, the cosine / warm-up schedule, the task's loss terms."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hierloc.training.config import complete_config
from hierloc.training.losses import distillation_loss, similarity_distillation_loss
from hierloc.training.tasks import DistillationTask
from hierloc.training.trainer import learning_rate_at, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator), dim=-1)


def test_similarity_loss_is_the_kl_of_the_softmaxed_anchor_similarities():
    teacher = torch.tensor([[1.0, 0.0]])
    student = torch.tensor([[0.0, 1.0]])
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # teacher similarities (1, 0), student (0, 1); at temperature 1: p = softmax(1, 0), q = softmax(0, 1)
    p = [math.e / (math.e + 1), 1 / (math.e + 1)]
    q = p[::-1]
    expected = sum(a * math.log(a / b) for a, b in zip(p, q))
    assert similarity_distillation_loss(student, teacher, anchors, temperature=1.0).item() == pytest.approx(expected)


def test_similarity_loss_is_zero_for_the_teacher_and_grows_with_the_error():
    teacher = unit_rows(6, 16, 0)
    anchors = unit_rows(50, 16, 1)
    assert similarity_distillation_loss(teacher, teacher, anchors).item() == pytest.approx(0.0, abs=1e-6)
    noise = unit_rows(6, 16, 2)
    losses = [similarity_distillation_loss(F.normalize(teacher + scale * noise, dim=-1), teacher, anchors).item()
              for scale in (0.05, 0.2, 0.8)]
    assert 0.0 < losses[0] < losses[1] < losses[2]


def test_similarity_loss_alone_pulls_the_student_onto_the_teacher():
    teacher = unit_rows(4, 8, 3)
    anchors = unit_rows(64, 8, 4)
    raw = unit_rows(4, 8, 5).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([raw], lr=0.05)
    before = distillation_loss(F.normalize(raw, dim=-1), teacher).item()
    for _ in range(200):
        optimizer.zero_grad()
        similarity_distillation_loss(F.normalize(raw, dim=-1), teacher, anchors, temperature=0.1).backward()
        optimizer.step()
    after = distillation_loss(F.normalize(raw, dim=-1), teacher).item()
    assert after < 0.05 * before


def test_similarity_loss_refuses_bad_shapes_and_temperatures():
    teacher = unit_rows(2, 4, 0)
    with pytest.raises(ValueError, match="differ in shape"):
        similarity_distillation_loss(unit_rows(2, 3, 0), teacher, unit_rows(5, 4, 1))
    with pytest.raises(ValueError, match="anchors"):
        similarity_distillation_loss(teacher, teacher, unit_rows(5, 3, 1))
    with pytest.raises(ValueError, match="temperature"):
        similarity_distillation_loss(teacher, teacher, unit_rows(5, 4, 1), temperature=0.0)


def test_cosine_schedule_with_warmup():
    rates = [learning_rate_at(i, [1.0, 0.01], [], "cosine", 10, 100) for i in (0, 4, 9, 10, 55, 100, 150)]
    assert rates[0] == pytest.approx(0.1 * (0.01 + 0.99 * 0.5 * (1 + math.cos(0.0))))
    assert rates[1] == pytest.approx(0.5 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.04))))
    assert rates[2] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.09)))
    assert rates[4] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.55)))
    assert rates[5] == pytest.approx(0.01) and rates[6] == pytest.approx(0.01)
    assert learning_rate_at(50, 0.2, [], "cosine", 0, 100) == pytest.approx(0.1)  # a float decays to 0
    # warm-up scales the step schedule too; without it the step schedule is unchanged
    assert learning_rate_at(1, [0.1, 0.01], [5], "step", 4, 10) == pytest.approx(0.05)
    assert learning_rate_at(7, [0.1, 0.01], [5]) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_at(0, 0.1, [], "linear")
    with pytest.raises(ValueError, match="iterations"):
        learning_rate_at(0, 0.1, [], "cosine")


@pytest.fixture(scope="module")
def distillation_root(tmp_path_factory):
    """12 small images with unit random teacher descriptors."""
    root = tmp_path_factory.mktemp("recipe")
    (root / "images").mkdir()
    (root / "teacher").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), rng.integers(0, 256, (24, 32), dtype=np.uint8))
        target = rng.normal(size=8)
        np.save(root / "teacher" / f"{i:03d}.npy", (target / np.linalg.norm(target)).astype(np.float32))
    return root


def recipe_config(**model) -> dict:
    return complete_config({
        "data": {"name": "distillation", "image_folders": ["images"], "descriptor_folders": ["teacher"],
                 "validation_size": 4, "preprocessing": {"resize": [24, 32], "grayscale": True}, "num_workers": 0},
        "model": {"name": "mobilenetvlad", "endpoint": "layer_4", "num_clusters": 4, "reduction_dim": "auto",
                  "batch_size": 4, "eval_batch_size": 4, "learning_rate": 0.01, **model},
        "train_iter": 4, "validation_interval": 2, "save_interval": 0, "log_interval": 1, "seed": 0,
    })


def test_task_adds_the_similarity_term_on_seeded_teacher_anchors(distillation_root):
    plain = DistillationTask(recipe_config(), distillation_root)
    assert plain.anchors is None
    task = DistillationTask(recipe_config(distill_similarity_weight=2.0, distill_anchors=5, distill_temperature=0.1),
                            distillation_root)
    again = DistillationTask(recipe_config(distill_similarity_weight=2.0, distill_anchors=5, distill_temperature=0.1),
                             distillation_root)
    assert task.anchors.shape == (5, 8) and torch.equal(task.anchors, again.anchors)
    student = unit_rows(3, 8, 7)

    class Fixed(torch.nn.Module):
        def forward(self, images):
            return student[: len(images)]

    batch = {"image": torch.zeros(3, 1, 24, 32, dtype=torch.uint8), "descriptor": unit_rows(3, 8, 8)}
    loss, metrics = task.loss(Fixed(), batch, torch.device("cpu"), augment=False)
    expected_l2 = distillation_loss(student, batch["descriptor"])
    expected_kl = similarity_distillation_loss(student, batch["descriptor"], task.anchors, 0.1)
    assert metrics["l2_error"].item() == pytest.approx(expected_l2.item())
    assert loss.item() == pytest.approx(expected_l2.item() + 2.0 * expected_kl.item())
    _, plain_metrics = plain.loss(Fixed(), batch, torch.device("cpu"), augment=False)
    assert set(plain_metrics) == {"loss"}
    with pytest.raises(ValueError, match="not both 0"):
        DistillationTask(recipe_config(distill_l2_weight=0.0), distillation_root)


def test_training_with_the_recipe_logs_both_terms(distillation_root, tmp_path):
    config = recipe_config(distill_similarity_weight=1.0, distill_anchors=6, learning_rate_schedule="cosine",
                           warmup_iter=2)
    result = train(config, tmp_path / "exp", data_root=distillation_root, progress=False)
    assert {"l2_error", "similarity_kl"} <= set(result["validation"][-1])
    rates = [entry["learning_rate"] for entry in result["training_log"]]
    assert rates == pytest.approx([learning_rate_at(i, 0.01, [], "cosine", 2, 4) for i in range(4)])
