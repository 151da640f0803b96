/**
 * Token-grid operations of the ViT host, written to train fast on tfjs-wasm: rank ≤ 4 tensors only,
 * contiguous slices, no saved activations in the pooling mixer.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@leanpass/core';

/**
 * Space-to-depth over a token grid: x [B, H, W, C] → [B, (H/p)·(W/p), p·p·C], tokens row-major over the
 * (H/p)×(W/p) grid, features ordered (dy, dx, c). One rank-4 transpose (reshape [B·H/p, p, W/p, p·C] →
 * transpose [0, 2, 1, 3]); its gradient is the inverse transpose.
 */
export function patchify(x: tf.Tensor, p: number): tf.Tensor3D {
  if (x.rank !== 4) throw new ConfigError(`patchify: expected x [B, H, W, C], found [${x.shape.join(', ')}]`);
  const [B, H, W, C] = x.shape as [number, number, number, number];
  if (H % p !== 0 || W % p !== 0) throw new ConfigError(`patchify: expected H and W divisible by the patch size ${p}, found ${H}×${W}`);
  if (p === 1) return tf.reshape(x, [B, H * W, C]);
  const r = tf.reshape(x, [B * (H / p), p, W / p, p * C]);
  const t = tf.transpose(r, [0, 2, 1, 3]);
  return tf.reshape(t, [B, (H / p) * (W / p), p * p * C]);
}

/**
 * Zero-padded 3×3 box sum over the grid of t [B, H, W, C]: y[r, c] = Σ_{|i|,|j| ≤ 1} t[r+i, c+j]
 * (outside the grid counts as 0). Separable: 3 contiguous slices along W, then 3 along H.
 * The operator is symmetric, so it is also its own adjoint.
 */
function boxSum3(t: tf.Tensor, B: number, H: number, W: number, C: number): tf.Tensor {
  const p = tf.reshape(tf.pad(tf.reshape(t, [B, H, W, C]), [[0, 0], [1, 1], [1, 1], [0, 0]]), [B, H + 2, (W + 2) * C]);
  const size: [number, number, number] = [B, H + 2, W * C];
  const h = tf.add(tf.add(tf.slice(p, [0, 0, 0], size), tf.slice(p, [0, 0, C], size)), tf.slice(p, [0, 0, 2 * C], size));
  const size2: [number, number, number] = [B, H, W * C];
  return tf.add(tf.add(tf.slice(h, [0, 0, 0], size2), tf.slice(h, [0, 1, 0], size2)), tf.slice(h, [0, 2, 0], size2));
}

/** 1 / (number of in-grid cells of each 3×3 window), [1, H, W·C]: PyTorch's count_include_pad = False. */
function inverseCounts(H: number, W: number, C: number): tf.Tensor {
  const data = new Float32Array(H * W * C);
  const span = (i: number, n: number): number => Math.min(i + 1, n - 1) - Math.max(i - 1, 0) + 1;
  for (let r = 0; r < H; r++) {
    for (let c = 0; c < W; c++) {
      const v = 1 / (span(r, H) * span(c, W));
      data.fill(v, (r * W + c) * C, (r * W + c + 1) * C);
    }
  }
  return tf.tensor3d(data, [1, H, W * C]);
}

/**
 * The pooling token mixer of PoolFormer: avg3×3(t) − t over the H×W grid of tokens t [B, H·W, C]
 * (row-major), average with count_include_pad = False (border windows average their in-grid cells).
 * A customGrad that saves nothing: the operator is linear, y = A t − t, so dt = Aᵀ dy − dy with
 * Aᵀ dy = box3(dy / count).
 */
export function poolMix(t: tf.Tensor, grid: readonly [number, number]): tf.Tensor3D {
  const [H, W] = grid;
  if (t.rank !== 3 || t.shape[1] !== H * W) {
    throw new ConfigError(`vit.pool-mixer: expected tokens [B, ${H * W}, C] on a ${H}×${W} grid, found [${t.shape.join(', ')}]`);
  }
  const [B, , C] = t.shape as [number, number, number];
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const x = args[0] as tf.Tensor;
    const inv = inverseCounts(H, W, C);
    const y = tf.sub(tf.reshape(tf.mul(boxSum3(x, B, H, W, C), inv), [B, H * W, C]), x);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor) => {
        const invB = inverseCounts(H, W, C);
        const scaled = tf.mul(tf.reshape(dy, [B, H, W * C]), invB);
        return tf.sub(tf.reshape(boxSum3(scaled, B, H, W, C), [B, H * W, C]), dy);
      },
    };
  });
  return op(t) as tf.Tensor3D;
}
