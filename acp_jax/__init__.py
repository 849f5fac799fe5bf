"""acp-jax: affective correspondence between music and images (ACP-Net) in JAX/Flax."""
