"""The training objectives: losses against hand computations, gradients, thresholds, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fakes
from acp_jax import checkpoint
from acp_jax import evaluate
from acp_jax import generated
from acp_jax import models
from acp_jax import objectives
from acp_jax import pairs
from acp_jax import train
from configs import contrastive

# Three unit vectors in 2-d and their classes: a small case to work out by hand.
_A = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], np.float32)
_B = np.array([[0.8, 0.6], [-1.0, 0.0], [0.0, -1.0]], np.float32)
_CLASS_A = np.array([0, 0, 1])
_CLASS_B = np.array([0, 1, 1])


def _supcon_by_hand(a, b, class_a, class_b, t, same):
  """The SupCon definition, written out anchor by anchor."""
  losses = []
  for i in range(len(a)):
    others = [j for j in range(len(b)) if not (same and j == i)]
    positives = [j for j in others if class_b[j] == class_a[i]]
    if not positives:
      continue
    log_denominator = np.log(sum(np.exp(a[i] @ b[j] / t) for j in others))
    losses.append(-np.mean([a[i] @ b[p] / t - log_denominator for p in positives]))
  return np.mean(losses)


def test_supcon_losses_match_the_definition():
  t = 0.5
  for same, b, class_b in ((True, _A, _CLASS_A), (False, _B, _CLASS_B)):
    got = objectives.supcon_loss(_A, b, _CLASS_A, class_b, t, same_items=same)
    assert float(got) == pytest.approx(_supcon_by_hand(_A, b, _CLASS_A, class_b, t, same),
                                       rel=1e-5)
  # Intra-modal, anchor 2 has no positive (the only item of class 1) and is left out:
  # anchors 0 and 1 each have the other as their one positive.
  s01 = _A[0] @ _A[1] / t
  expected = np.mean([-(s01 - np.log(np.exp(s01) + np.exp(_A[0] @ _A[2] / t))),
                      -(s01 - np.log(np.exp(s01) + np.exp(_A[1] @ _A[2] / t)))])
  assert float(objectives.supcon_loss(_A, _A, _CLASS_A, _CLASS_A, t, same_items=True)) == (
      pytest.approx(expected, rel=1e-5))

  weights = (0.1, 0.2, 0.3, 0.4)
  terms = (_supcon_by_hand(_A, _A, _CLASS_A, _CLASS_A, t, True),
           _supcon_by_hand(_B, _B, _CLASS_B, _CLASS_B, t, True),
           _supcon_by_hand(_A, _B, _CLASS_A, _CLASS_B, t, False),
           _supcon_by_hand(_B, _A, _CLASS_B, _CLASS_A, t, False))
  got = objectives.emo_clim_loss(_A, _B, _CLASS_A, _CLASS_B, t, weights)
  assert float(got) == pytest.approx(np.dot(weights, terms), rel=1e-5)


def test_sigmoid_loss_matches_the_definition():
  scale, bias = np.log(10.0), -10.0
  expected = 0.0
  for i in range(3):
    for j in range(3):
      z = 1.0 if _CLASS_A[i] == _CLASS_B[j] else -1.0
      expected -= np.log(1 / (1 + np.exp(-z * (10.0 * _A[i] @ _B[j] + bias))))
  got = objectives.sigmoid_loss(_A, _B, _CLASS_A, _CLASS_B, scale, bias)
  assert float(got) == pytest.approx(expected / 3, rel=1e-5)


def test_gradients_are_finite_for_identical_and_orthogonal_items():
  # Identical projections saturate the softmax; a class seen once has no positive.
  a = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  class_a, class_b = jnp.array([0, 0, 1, 2]), jnp.array([0, 1, 1, 2])
  losses = {
      "supcon": lambda a, b, s, c: objectives.emo_clim_loss(a, b, class_a, class_b, 0.07,
                                                            (0.25,) * 4),
      "sigmoid": lambda a, b, s, c: objectives.sigmoid_loss(a, b, class_a, class_b, s, c)}
  for name, loss in losses.items():
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(a, a[::-1], jnp.log(10.0), -10.0)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads)), name


def test_best_cut_maximises_accuracy_on_the_pairs():
  score = jnp.array([0.1, 0.5, 0.3, 0.9, 0.2])
  label = jnp.array([0, 1, 0, 1, 1])
  # Sorted: .1 (no) .2 (yes) .3 (no) .5 (yes) .9 (yes): cutting at .15 or .4 gets 4 of
  # 5; the lower cut wins the tie.
  assert float(objectives.best_cut(score, label)) == pytest.approx(0.15)
  assert float(objectives.best_cut(score, 1 - label)) > 0.9  # 'never a match' is best
  # Tied scores fall on the same side: splitting the three .3s after two would get 4 of
  # 4, but only 'below .8 is no match' (3 of 4) is a cut.
  tied = objectives.best_cut(jnp.array([0.3, 0.3, 0.3, 0.8]), jnp.array([0, 0, 1, 1]))
  assert 0.3 < float(tied) < 0.8


def _small(objective, **overrides):
  config = contrastive.get_config(f"synthetic,{objective}")
  shrunk = fakes.small_config()
  for key in ("image_widths", "music_widths", "steps_per_dispatch", "log_every_steps",
              "eval_every_epochs", "checkpoint_every_epochs", "num_seeds"):
    config[key] = shrunk[key]
  config.projection_widths = (16, 8)
  config.batch_size = 32
  config.learning_rate = 3e-3
  config.num_epochs = 8                 # 88 steps of 32 items
  config.update(overrides)
  return config


@pytest.mark.parametrize("objective", ["supcon", "sigmoid"])
def test_contrastive_objective_learns_and_keeps_its_validation_threshold(tmp_path, objective):
  splits = generated.make_splits()
  # SigLIP's bias of -10 suits one positive pair in thousands; with a third of the pairs
  # positive it takes hundreds of steps to climb, more than this test runs.
  config = _small(objective, logit_bias_init=0.0)
  results = train.train_and_evaluate(config, str(tmp_path), splits=splits)
  assert results["objective"] == objective
  # Chance is 0.5 and the oracle 0.945; a model that does not learn stays near 0.5.
  assert results["test_accuracy"] > 0.6
  assert results["models"][f"acp+{objective}"]["test_accuracy"] == results["test_accuracy"]
  assert set(results["retrieval"]["image_to_music"]["per_class"]["p@1"]) != {None}
  assert results["retrieval"]["image_to_music"]["queries"] == len(splits["test"].images.ids)

  # The best checkpoint holds the threshold chosen on the validation pairs: it is the
  # best cut of the restored model's validation scores, and it gives the test accuracy.
  best = checkpoint.load_best(tmp_path)
  threshold = float(best.batch_stats[models.THRESHOLD][0])
  assert threshold != 0.0
  restored = evaluate.restore(tmp_path, splits=splits)
  val = restored.pair_metrics("validation")
  assert abs(float(val["cut"][0])) < 1e-5  # already at the best cut
  assert float(val["accuracy"][0]) == pytest.approx(results["val_accuracy"])
  test = restored.pair_metrics("test")
  assert float(test["accuracy"][0]) == pytest.approx(results["test_accuracy"])


def test_class_loss_targets_are_each_items_class():
  split = generated.make_splits()["train"]
  tables = jax.device_put(pairs.make_tables(split.images.features_NxD, split.music.features_NxD,
                                            split.images.labels_N, split.music.labels_N))
  image_B, music_B, target_Bx3 = map(np.asarray, objectives.Correspondence(
      class_loss_weight=1.0).sample(jax.random.key(0), tables, 64))
  np.testing.assert_array_equal(target_Bx3[:, 1], split.images.labels_N[image_B])
  np.testing.assert_array_equal(target_Bx3[:, 2], split.music.labels_N[music_B])
  np.testing.assert_array_equal(target_Bx3[:, 0], target_Bx3[:, 1] == target_Bx3[:, 2])
  # Without the class loss, the paper's draw: the same pairs, the pair label alone.
  plain = objectives.Correspondence().sample(jax.random.key(0), tables, 64)
  np.testing.assert_array_equal(np.asarray(plain[2]), target_Bx3[:, 0])


def test_class_loss_trains_the_class_heads_and_restores(tmp_path):
  splits = generated.make_splits()
  config = fakes.small_config(class_loss_weight=1.0, num_epochs=3)
  results = train.train_and_evaluate(config, str(tmp_path), splits=splits)
  # The class heads learned the classes of the training items (chance 1/3).
  best = checkpoint.load_best(tmp_path)
  train_split, num = splits["train"], len(splits["train"].music.ids)
  _, image_BxC, music_BxC = models.create_model(config).apply(
      best.seed_variables(0), best.image_standardizer(train_split.images.features_NxD[:num]),
      best.music_standardizer(train_split.music.features_NxD), method="logits_and_classes")
  image_accuracy = np.mean(np.argmax(image_BxC, -1) == train_split.images.labels_N[:num])
  music_accuracy = np.mean(np.argmax(music_BxC, -1) == train_split.music.labels_N)
  assert image_accuracy > 0.6 and music_accuracy > 0.5, (image_accuracy, music_accuracy)
  # The heads score no pair: the restored model's test accuracy is the run's.
  test = evaluate.restore(tmp_path, splits=splits).pair_metrics("test")
  assert float(test["accuracy"][0]) == pytest.approx(results["test_accuracy"])
