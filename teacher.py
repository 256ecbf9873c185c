"""DiDE's teacher: a ViLT-style fusion encoder, and the signals it hands a student.

One transformer runs over the concatenation [text tokens ; image [CLS] + patches]
(ViLT, Kim et al. 2021), so every layer lets words attend to patches and patches to
words: that is "fusion". Each part carries a modality-type embedding (0 text, 1 image,
2 the second image of a reasoning pair); one joint key mask hides text padding; the
pooler (Linear + tanh) reads the text [CLS]. The task heads are built by the same
`make_heads` as the student's (model.py), with weights of their own.

Reasoning (NLVR2) takes two images: the teacher runs once per image (types 1 and 2)
and classifies the two pooled vectors concatenated, ViLT's "pair" method.

In pre-training the teacher also predicts masked words of a caption from the image
(`MLMHead`, ViLT's masked language modelling; pretrain.py says why).

`teacher_cross_modal_attention` splits one layer's joint queries and keys into their text and
image parts (`split_joint`), and `cross_modal_attention` soft-maxes each cross-modal block on
its own: the text-to-image and image-to-text distributions DiDE distils (README, "The method").
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from model import (AttentionDetails, Encoder, EncoderOutput, ImageEmbedding, ModelConfig,
                   ModelOutput, TextEmbedding, check_task, init_weights, make_heads)

TEXT_TYPE, IMAGE_TYPE, SECOND_IMAGE_TYPE = 0, 1, 2   # modality-type ids


class MLMHead(nn.Module):
    """ViLT's masked-word predictor: Linear -> GELU -> LayerNorm, then a linear decoder to a score
    for every word of the vocabulary. As in ViLT's code, the decoder has weights of its own (BERT ties
    them to the word embeddings; tied, our tiny teacher's pre-training learnt less: EXPERIMENTS.md,
    section 1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(cfg.n_embd, cfg.n_embd), nn.GELU(), nn.LayerNorm(cfg.n_embd))
        self.decoder = nn.Linear(cfg.n_embd, cfg.vocab_size)

    def forward(self, hidden):
        # hidden: (B, L, C) at the text positions
        return self.decoder(self.transform(hidden))                                      # (B, L, vocab)


class FusionEncoder(nn.Module):
    """Single-stream vision-language transformer (ViLT)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.text_embed = TextEmbedding(cfg)
        self.image_embed = ImageEmbedding(cfg)
        self.modality_type = nn.Embedding(3, cfg.n_embd)
        self.encoder = Encoder(cfg)
        self.pooler = nn.Sequential(nn.Linear(cfg.n_embd, cfg.n_embd), nn.Tanh())
        self.heads = make_heads(cfg)
        self.mlm_head = MLMHead(cfg)
        self.apply(init_weights)

    def second_image_like_first(self):
        """As ViLT does for NLVR2: pre-training shows only single images (type 1), so type 2 was never
        trained; the second image starts from the first image's embedding, and fine-tuning tells them apart."""
        with torch.no_grad():
            self.modality_type.weight[SECOND_IMAGE_TYPE] = self.modality_type.weight[IMAGE_TYPE]

    def fuse(self, text_ids, text_mask, images, image_type=IMAGE_TYPE, pixel_mask=None, **details) -> EncoderOutput:
        """One joint pass. text_ids, text_mask: (B, Lt); images: (B, 3, H, W); pixel_mask: bool (B, H, W)
        or None. Sequence = Lt + Nv tokens."""
        text = self.text_embed(text_ids) + self.modality_type.weight[TEXT_TYPE]          # (B, Lt, C)
        image, image_mask = self.image_embed(images, pixel_mask)                         # (B, Nv, C), bool (B, Nv)
        image = image + self.modality_type.weight[image_type]
        x = torch.cat([text, image], dim=1)                                              # (B, Lt + Nv, C)
        key_mask = torch.cat([text_mask, image_mask], dim=1)                             # (B, Lt + Nv)
        return self.encoder(x, key_mask, **details)

    def pool(self, fused: EncoderOutput):
        """ViLT's pooler on the text [CLS] (position 0 of the joint sequence): (B, C)."""
        return self.pooler(fused.hidden[:, 0])

    def forward(self, batch, task, **details) -> ModelOutput:
        # batch["images"]: (B, K, 3, H, W); batch["text_ids"], batch["text_mask"]: (B, L);
        # batch["pixel_mask"] (real data only): bool (B, K, H, W)
        images, pixel_mask = batch["images"], batch.get("pixel_mask")
        K = images.shape[1]
        check_task(task, K)
        fusion = [self.fuse(batch["text_ids"], batch["text_mask"], images[:, k], IMAGE_TYPE + k,
                            None if pixel_mask is None else pixel_mask[:, k], **details)
                  for k in range(K)]
        pooled = torch.cat([self.pool(f) for f in fusion], dim=-1)                     # (B, K*C)
        return ModelOutput(self.heads[task](pooled), fusion=fusion, mlm_logits=self.masked_words(batch, task),
                           images_per_example=K)

    def masked_words(self, batch, task):
        """Pre-training batches with masked captions (pretrain.py): a second joint pass over each
        image and its own caption with words masked, scored at every text position. (B, L, vocab)"""
        if task != "itm" or "mlm_text_ids" not in batch:
            return None
        masked_ids = batch["mlm_text_ids"]                                               # (B, L)
        fused = self.fuse(masked_ids, batch["mlm_text_mask"], batch["images"][:, 0])
        return self.mlm_head(fused.hidden[:, :masked_ids.shape[1]])


# -----------------------------------------------------------------------------
# The signal DiDE distils: cross-modal attention of the joint sequence

@dataclass
class CrossModalAttention:
    """Log-probabilities (fp32) of the two cross-modal distributions; -inf at padded keys."""
    log_text_to_image: torch.Tensor   # (B, nh, Lt, Nv): each word's distribution over image tokens
    log_image_to_text: torch.Tensor   # (B, nh, Nv, Lt): each image token's distribution over real words

    @property
    def text_to_image(self):
        return self.log_text_to_image.exp()

    @property
    def image_to_text(self):
        return self.log_image_to_text.exp()


def cross_modal_attention(text_queries, text_keys, image_queries, image_keys, text_mask,
                          image_mask=None) -> CrossModalAttention:
    """Soft-max within the two cross-modal blocks, in fp32.

        A_T2I = softmax_j( Q_text K_image^T / sqrt(d) + mask_image )
        A_I2T = softmax_j( Q_image K_text^T / sqrt(d) + mask_text )

    The teacher calls it with the text and image halves of its joint queries and keys;
    the student with its text tower's queries and its image tower's keys (and the reverse),
    the "virtual" cross attention that never enters its forward pass.
    Shapes: text_*: (B, nh, Lt, hs); image_*: (B, nh, Nv, hs); text_mask: bool (B, Lt);
    image_mask: bool (B, Nv), False at padded patches (None: none padded).
    Log-probabilities come from log_softmax, which stays finite where exp(log) underflows.
    """
    scale = 1.0 / math.sqrt(text_queries.shape[-1])
    with torch.autocast(text_queries.device.type, enabled=False):   # autocast would run these matmuls in bf16
        text_to_image = (text_queries.float() @ image_keys.float().transpose(-2, -1)) * scale   # (B, nh, Lt, Nv)
        image_to_text = (image_queries.float() @ text_keys.float().transpose(-2, -1)) * scale   # (B, nh, Nv, Lt)
    image_to_text = image_to_text.masked_fill(~text_mask[:, None, None, :], float("-inf"))
    if image_mask is not None:
        text_to_image = text_to_image.masked_fill(~image_mask[:, None, None, :], float("-inf"))
    return CrossModalAttention(text_to_image.log_softmax(-1), image_to_text.log_softmax(-1))


def split_joint(details: AttentionDetails, text_len: int):
    """Split a joint layer's queries and keys (B, nh, Lt + Nv, hs) into text and image parts."""
    q, k = details.queries, details.keys
    return q[:, :, :text_len], k[:, :, :text_len], q[:, :, text_len:], k[:, :, text_len:]


def teacher_cross_modal_attention(fused: EncoderOutput, layer: int, text_mask) -> CrossModalAttention:
    """The teacher's text-to-image and image-to-text distributions at one layer of one joint pass."""
    text_len = text_mask.shape[1]
    text_q, text_k, image_q, image_k = split_joint(fused.attention_at(layer), text_len)
    return cross_modal_attention(text_q, text_k, image_q, image_k, text_mask, fused.mask[:, text_len:])


def freeze(module: nn.Module) -> nn.Module:
    """A teacher is frozen and in eval mode: no gradients, no dropout, no statistics updates."""
    module.requires_grad_(False)
    return module.eval()
