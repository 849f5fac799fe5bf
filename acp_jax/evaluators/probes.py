"""MLP probes on frozen embeddings: how much emotion a tower learned (paper Table 5).

ACP-Net never sees emotion labels; a small MLP trained on its frozen 1024-d tower
embeddings tells how much emotion they still carry (images: 8 emotions, music: 3
classes, hidden sizes 512 and 32 in the paper). Inputs are standardised with the
training statistics; the model kept is the one with the best validation accuracy.
The probes read the analysed seed's embeddings of every split.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn.metrics import confusion_matrix

from acp_jax import UserError
from acp_jax import inputs
from acp_jax import labels
from acp_jax import report
from acp_jax.evaluators import common


class MLP(nn.Module):
  """ReLU layers of widths `hidden`, dropout after each, then class logits."""
  hidden: Sequence[int]
  num_classes: int
  dropout: float

  @nn.compact
  def __call__(self, x_BxD: jax.Array, *, train: bool) -> jax.Array:
    for width in self.hidden:
      x_BxD = nn.relu(nn.Dense(width)(x_BxD))
      x_BxD = nn.Dropout(self.dropout, deterministic=not train)(x_BxD)
    return nn.Dense(self.num_classes)(x_BxD)


def _check_split(name: str, x_NxD: np.ndarray, y_N: np.ndarray, dim: int, num_classes: int) -> None:
  if x_NxD.ndim != 2 or x_NxD.shape[1] != dim or y_N.shape != (x_NxD.shape[0],):
    raise ValueError(f"{name}: expected features (N, {dim}) and labels (N,), "
                     f"got {x_NxD.shape} and {y_N.shape}")
  if y_N.size == 0:
    raise ValueError(f"{name}: no examples")
  if y_N.min() < 0 or y_N.max() >= num_classes:
    raise ValueError(f"{name}: labels must lie in [0, {num_classes}), "
                     f"got [{y_N.min()}, {y_N.max()}]")


def train_probe(train_X: np.ndarray, train_y: np.ndarray, val_X: np.ndarray, val_y: np.ndarray,
                test_X: np.ndarray, test_y: np.ndarray, *, hidden: Sequence[int] = (512, 32),
                num_classes: int, learning_rate: float, epochs: int, batch_size: int,
                dropout: float, weight_decay: float, patience: int, seed: int) -> dict:
  """Trains an MLP probe with early stopping on validation accuracy; tests the best epoch.

  Args:
    train_X, val_X, test_X: embeddings, (N, D) each.
    train_y, val_y, test_y: int class labels, (N,) each.
    hidden: hidden layer widths.
    num_classes: number of classes.
    learning_rate: Adam learning rate.
    epochs: most passes over the training set.
    batch_size: examples per step (capped at the training set size; each epoch
      takes a fresh shuffle and drops the remainder).
    dropout: drop probability after each hidden layer.
    weight_decay: decoupled (AdamW) weight decay; 0 is plain Adam.
    patience: epochs without a better validation accuracy before stopping.
    seed: initialisation, shuffling and dropout.

  Returns:
    A JSON-ready dict: `test_accuracy` and `test_balanced_accuracy` (mean per-class
    recall) at the best-validation epoch, `val_accuracy`, `best_epoch` (1-based),
    `epochs_run`, `per_class_accuracy` (None for a class absent from test),
    `confusion` (rows true, columns predicted), `chance` (1 / num_classes),
    `majority` (test accuracy of always answering the most frequent training
    class), `num_classes`, and `history` rows {'epoch', 'train_loss',
    'train_accuracy', 'val_accuracy'}.
  """
  train_X, val_X, test_X = (np.asarray(x, np.float32) for x in (train_X, val_X, test_X))
  train_y, val_y, test_y = (np.asarray(y, np.int32) for y in (train_y, val_y, test_y))
  dim = train_X.shape[-1]
  for name, x, y in (("train", train_X, train_y), ("validation", val_X, val_y),
                     ("test", test_X, test_y)):
    _check_split(name, x, y, dim, num_classes)

  standardizer = inputs.Standardizer.fit(train_X)
  train_X, val_X, test_X = (jnp.asarray(standardizer(x)) for x in (train_X, val_X, test_X))
  train_labels = jnp.asarray(train_y)

  model = MLP(hidden=tuple(hidden), num_classes=num_classes, dropout=dropout)
  tx = optax.adamw(learning_rate, weight_decay=weight_decay)
  init_rng, rng = jax.random.split(jax.random.key(seed))
  params = model.init(init_rng, jnp.zeros((1, dim)), train=False)["params"]
  opt_state = tx.init(params)
  batch = min(batch_size, train_X.shape[0])
  steps = train_X.shape[0] // batch

  @jax.jit
  def run_epoch(params, opt_state, x_NxD, y_N, rng):
    perm_rng, dropout_rng = jax.random.split(rng)
    order_N = jax.random.permutation(perm_rng, x_NxD.shape[0])
    index_SxB = order_N[:steps * batch].reshape(steps, batch)

    def step(carry, xs):
      params, opt_state = carry
      index_B, step_rng = xs

      def loss_fn(params):
        logits_BxC = model.apply({"params": params}, x_NxD[index_B], train=True,
                                 rngs={"dropout": step_rng})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_N[index_B]).mean()
        return loss, jnp.mean(jnp.argmax(logits_BxC, -1) == y_N[index_B])

      (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), (loss, accuracy)

    (params, opt_state), (loss_S, accuracy_S) = lax.scan(
        step, (params, opt_state), (index_SxB, jax.random.split(dropout_rng, steps)))
    return params, opt_state, loss_S.mean(), accuracy_S.mean()

  @jax.jit
  def predict(params, x_NxD):
    return jnp.argmax(model.apply({"params": params}, x_NxD, train=False), axis=-1)

  best_accuracy, best_epoch, best_params = -1.0, 0, params
  history = []
  for epoch in range(1, epochs + 1):
    rng, epoch_rng = jax.random.split(rng)
    params, opt_state, loss, accuracy = run_epoch(params, opt_state, train_X, train_labels,
                                                  epoch_rng)
    val_accuracy = float(np.mean(np.asarray(predict(params, val_X)) == val_y))
    history.append({"epoch": epoch, "train_loss": float(loss), "train_accuracy": float(accuracy),
                    "val_accuracy": val_accuracy})
    if not np.isfinite(history[-1]["train_loss"]):
      raise FloatingPointError(f"probe loss is {loss} at epoch {epoch}; lower the learning rate")
    # Strictly better only: on a tie the earlier (less fitted) epoch is kept.
    if val_accuracy > best_accuracy:
      best_accuracy, best_epoch, best_params = val_accuracy, epoch, params
    elif epoch - best_epoch >= patience:
      break

  test_pred = np.asarray(predict(best_params, test_X))
  confusion = confusion_matrix(test_y, test_pred, labels=np.arange(num_classes))
  support_C = confusion.sum(axis=1)
  per_class = [float(confusion[c, c] / support_C[c]) if support_C[c] else None
               for c in range(num_classes)]
  majority_class = np.bincount(train_y, minlength=num_classes).argmax()
  return {
      "test_accuracy": float(np.mean(test_pred == test_y)),
      "test_balanced_accuracy": float(np.mean([a for a in per_class if a is not None])),
      "val_accuracy": best_accuracy,
      "best_epoch": best_epoch,
      "epochs_run": len(history),
      "per_class_accuracy": per_class,
      "confusion": confusion.tolist(),
      "chance": 1.0 / num_classes,
      "majority": float(np.mean(test_y == majority_class)),
      "num_classes": num_classes,
      "history": history,
  }


class Evaluator:
  """Trains an image probe (8 emotions) and a music probe (3 classes) on the training split's
  embeddings with early stopping on validation (`options`: `train_probe`'s keyword
  arguments), and tests them."""

  def __init__(self, options: ml_collections.ConfigDict):
    self.settings = options

  def run(self, subject: common.Subject) -> common.Evaluation:
    splits = subject.splits
    if any(split.images.emotions_N is None for split in splits.values()):
      raise UserError(f"{subject.config.dataset} has no image emotions to probe for")
    embedded = {name: subject.seed_embeddings(name) for name in splits}
    # (tower output, targets of a split, target names) of each probe.
    probes = {"image": (0, lambda split: split.images.emotions_N, labels.EMOTIONS),
              "music": (1, lambda split: split.music.labels_N, labels.CLASSES)}
    results, figures = {}, {}
    for name, (tower, targets, class_names) in probes.items():
      arrays = [a for split in ("train", "validation", "test")
                for a in (embedded[split][tower], targets(splits[split]))]
      results[name] = train_probe(*arrays, num_classes=len(class_names), **self.settings)
      if subject.figures_dir is None:
        continue
      curves = subject.figures_dir / f"probe_{name}_curves.png"
      confusion = subject.figures_dir / f"probe_{name}_confusion.png"
      report.plot_learning_curves(results[name]["history"], curves, x_key="epoch",
                                  title=f"{name.capitalize()} emotion probe")
      report.plot_confusion(np.array(results[name]["confusion"]), class_names, confusion,
                            f"{name.capitalize()} emotion probe (test)")
      figures[f"{name.capitalize()} probe: learning curves"] = curves
      figures[f"{name.capitalize()} probe: confusion matrix (test)"] = confusion
    return common.Evaluation(results={"probe": results}, figures=figures)
