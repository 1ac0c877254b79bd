"""The NT-Xent contrastive loss of SimCLR, with MICLe's optional same-patient negative masking.

Works in any replica context: with no strategy, inside `strategy.run` / a Keras `train_step` under
Mirrored, MultiWorkerMirrored or TPU strategies. Negatives come from the two views of every example of
the global batch (gathered from all replicas); the positive of a view is the other view of the same
example.
"""
from __future__ import annotations

import math

import tensorflow as tf

# Subtracted from the logits of removed pairs; their softmax weight underflows to exactly 0.
LARGE_NUM = 1e9


def _group_keys(group_ids: tf.Tensor) -> tf.Tensor:
    """Maps string or integer group ids [B] to int32 keys [B, 2] (a 64-bit id split in two halves).

    Strings are fingerprinted to 63 bits, so distinct ids collide with negligible probability (a
    collision only removes one negative pair). int32 halves keep the gather TPU-friendly.
    """
    group_ids = tf.convert_to_tensor(group_ids)
    if group_ids.dtype == tf.string:
        keys = tf.strings.to_hash_bucket_fast(group_ids, num_buckets=2**63 - 1)
    elif group_ids.dtype.is_integer:
        keys = tf.cast(group_ids, tf.int64)
    else:
        raise ValueError(f"nt_xent_loss: group_ids must be strings or integers, got {group_ids.dtype.name}")
    return tf.bitcast(keys, tf.int32)


def nt_xent_loss(
    z1: tf.Tensor,
    z2: tf.Tensor,
    *,
    temperature: float,
    group_ids: tf.Tensor | None = None,
    mask_same_group: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """NT-Xent loss of the local examples against the whole global batch.

    Args:
      z1, z2: [B_local, d] projections of the first and second view of the same B_local examples;
        L2-normalised here. Every replica must hold the same B_local (use `drop_remainder=True`).
      temperature: softmax temperature tau > 0.
      group_ids: [B_local] strings or integers naming each example's group (the patient); only read
        when `mask_same_group` is True.
      mask_same_group: if True, views of OTHER examples with the same group id are removed from the
        negatives of an anchor (the MICLe option); the anchor's own positive is always kept.

    Returns:
      loss: scalar float32 (float64 for float64 inputs): the mean over the B_local local examples of
        l(view-1 anchor) + l(view-2 anchor), where l(anchor) = -log softmax at the positive over the
        2*B_global - 1 other views (minus removed ones); SimCLR's convention of summing both
        directions per example. It is the per-replica value: the caller divides it by
        `num_replicas_in_sync` exactly once before taking gradients, so that the all-reduced (summed)
        gradient is the gradient of the global mean.
      logits: [B_local, 2*B_global] in the loss dtype, the view-1 anchors' logits: columns
        [0, B_global) are view-2 candidates, [B_global, 2*B_global) view-1 candidates (self and
        removed pairs at -LARGE_NUM).
      labels: [B_local] int32, the column of each anchor's positive in `logits`.
    """
    if temperature <= 0:
        raise ValueError(f"nt_xent_loss: temperature must be > 0, got {temperature}")
    if mask_same_group and group_ids is None:
        raise ValueError("nt_xent_loss: mask_same_group=True needs group_ids")
    z1, z2 = tf.convert_to_tensor(z1), tf.convert_to_tensor(z2)
    dtype = tf.float64 if z1.dtype == tf.float64 else tf.float32  # half precision is promoted
    z1 = tf.math.l2_normalize(tf.cast(z1, dtype), axis=-1)
    z2 = tf.math.l2_normalize(tf.cast(z2, dtype), axis=-1)
    batch_local = tf.shape(z1)[0]

    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise ValueError("nt_xent_loss must run in a replica context (inside strategy.run or a "
                         "Keras train_step), not in the cross-replica context of strategy.scope()")
    if ctx.num_replicas_in_sync > 1:
        z1_all = ctx.all_gather(z1, axis=0)
        z2_all = ctx.all_gather(z2, axis=0)
    else:
        z1_all, z2_all = z1, z2
    batch_global = tf.shape(z1_all)[0]

    # Global index of each local example; its positive is the same index in the other view.
    replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    labels = replica_id * batch_local + tf.range(batch_local)
    self_mask = tf.one_hot(labels, batch_global, dtype=dtype)  # [B_local, B_global]

    if mask_same_group:
        keys = _group_keys(group_ids)
        keys_all = tf.stop_gradient(ctx.all_gather(keys, axis=0)) if ctx.num_replicas_in_sync > 1 else keys
        same_group = tf.reduce_all(keys[:, None, :] == keys_all[None, :, :], axis=-1)
        same_group = tf.cast(same_group, dtype)
        # Same-view candidates: self and every other same-group example; other view: all but the positive.
        mask_same_view = tf.maximum(same_group, self_mask)
        mask_other_view = same_group * (1.0 - self_mask)
    else:
        mask_same_view = self_mask
        mask_other_view = tf.zeros_like(self_mask)

    inv_t = 1.0 / temperature
    logits_aa = tf.matmul(z1, z1_all, transpose_b=True) * inv_t - mask_same_view * LARGE_NUM
    logits_bb = tf.matmul(z2, z2_all, transpose_b=True) * inv_t - mask_same_view * LARGE_NUM
    logits_ab = tf.matmul(z1, z2_all, transpose_b=True) * inv_t - mask_other_view * LARGE_NUM
    logits_ba = tf.matmul(z2, z1_all, transpose_b=True) * inv_t - mask_other_view * LARGE_NUM

    logits_a = tf.concat([logits_ab, logits_aa], axis=1)
    logits_b = tf.concat([logits_ba, logits_bb], axis=1)
    loss_a = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_a)
    loss_b = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_b)
    loss = tf.reduce_mean(loss_a + loss_b)
    return loss, logits_a, labels


def contrastive_accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Fraction of anchors whose highest logit is their positive (`logits`, `labels` as returned by
    `nt_xent_loss`)."""
    hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), tf.cast(labels, tf.int32))
    return tf.reduce_mean(tf.cast(hits, tf.float32))


def chance_levels(global_batch: int) -> dict[str, float]:
    """The logged loss and accuracy of an encoder that cannot tell views apart, for a global batch of
    `global_batch` pairs: every anchor has 2B - 1 candidates (its positive and 2B - 2 negatives), so
    uniform logits give `nt_xent_loss` = 2 ln(2B - 1) (both directions summed) and a random ranking
    gives `contrastive_accuracy` = 1 / (2B - 1). (With `mask_same_group`, removed same-group
    negatives lower both slightly; these are the values for a batch of distinct groups.)"""
    if global_batch < 1:
        raise ValueError(f"chance_levels: global_batch must be >= 1, got {global_batch}")
    candidates = 2 * global_batch - 1
    return {"loss": 2.0 * math.log(candidates), "contrast_acc": 1.0 / candidates}
