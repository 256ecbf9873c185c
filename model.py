"""The transformer, written by hand, and DiDE's student: the dual encoder.

Read top to bottom: configuration and named sizes, attention, MLP, block, encoder,
the two embeddings (image patches, text tokens), the image and text towers, and
`DualEncoder` (DiDE, Wang et al. 2022, section 2: two towers, a shallow fusion MLP
on their pooled [CLS] vectors, one head per task). The fusion teacher in `teacher.py`
is built from the same blocks.

Every block can hand back what distillation needs (queries, keys, attention
probabilities, hidden states) when a caller asks; the default path asks for nothing
and runs `torch.nn.functional.scaled_dot_product_attention`.

    python -c "import model; print(model.DualEncoder(model.ModelConfig()))"
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


# -----------------------------------------------------------------------------
# Configuration

@dataclass
class ModelConfig:
    n_layer: int = 4            # transformer blocks per encoder (each student tower; the teacher's one stack)
    n_head: int = 4             # attention heads
    n_embd: int = 256           # hidden width
    mlp_ratio: int = 4          # MLP hidden width = mlp_ratio * n_embd
    image_size: int = 64        # input images are image_size x image_size pixels
    patch_size: int = 8         # non-overlapping square patches (ViLT-B/32: 32)
    max_text_len: int = 32      # text positions, [CLS] and [SEP] included (ViLT: 40)
    vocab_size: int = 128       # word vocabulary, set from the tokenizer
    num_answers: int = 32       # VQA answer vocabulary, set from the data
    dropout: float = 0.0        # dropout in attention output, MLP and embeddings

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        for name in ("n_layer", "n_head", "n_embd", "mlp_ratio", "image_size", "patch_size",
                     "max_text_len", "vocab_size", "num_answers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"ModelConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"ModelConfig.image_size ({self.image_size}) must be a multiple of "
                             f"patch_size ({self.patch_size})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# Named sizes. `tiny` runs in seconds on a CPU (tests); `mini` is for experiments on a CPU
# (the benchmark's full 64 px scenes, a narrow model); `small` is the default and trains in
# minutes on one GPU; `vilt-b32` is the papers' size (ViLT-B/32: 12 x 768, 384 px).
MODEL_SIZES = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, image_size=32, patch_size=8, max_text_len=32),
    "mini": dict(n_layer=3, n_head=4, n_embd=64, image_size=64, patch_size=8, max_text_len=32),
    "small": dict(n_layer=4, n_head=4, n_embd=256, image_size=64, patch_size=8, max_text_len=32),
    "vilt-b32": dict(n_layer=12, n_head=12, n_embd=768, image_size=384, patch_size=32, max_text_len=40),
}


def model_config(size: str, **overrides) -> ModelConfig:
    """The ModelConfig of a named size, with overrides (e.g. vocab_size from the tokenizer)."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(MODEL_SIZES)}")
    cfg = ModelConfig(**{**MODEL_SIZES[size], **overrides})
    cfg.validate()
    return cfg


# -----------------------------------------------------------------------------
# The transformer block

@dataclass
class AttentionDetails:
    """What one attention layer hands a distillation loss. Tensors are (B, nh, T, hs) or (B, nh, T, T)."""
    queries: torch.Tensor
    keys: torch.Tensor
    probs: torch.Tensor | None = None   # explicit soft-max attention, only when asked for


class Attention(nn.Module):
    """Multi-head self-attention with a key padding mask."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_size = cfg.n_embd // cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)   # queries, keys, values in one matmul
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x, key_mask, want_qk=False, want_probs=False):
        # x: (B, T, C); key_mask: bool (B, T), True at real tokens
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        allowed = key_mask[:, None, None, :]                            # (B, 1, 1, T), broadcast over heads and queries
        dropout_p = self.dropout if self.training else 0.0

        probs = None
        # B = 0 (an empty DDP shard) is written out too: some fused kernels refuse it (pytorch/pytorch#133780)
        if want_probs or B == 0:
            # Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + mask) V, written out; soft-max in fp32
            scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(self.head_size)  # (B, nh, T, T)
            scores = scores.masked_fill(~allowed, float("-inf"))
            attention = scores.softmax(dim=-1)                                      # (B, nh, T, T)
            y = F.dropout(attention.to(v.dtype), dropout_p, self.training) @ v       # (B, nh, T, hs)
            probs = attention if want_probs else None                                # handed back only when asked for
        else:
            # the same formula, fused: PyTorch picks a flash / memory-efficient kernel
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, C)                                     # re-assemble heads
        y = F.dropout(self.proj(y), dropout_p, self.training)
        details = AttentionDetails(q, k, probs) if (want_qk or want_probs) else None
        return y, details


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)).

    LayerNorm runs in fp32 even under bf16 autocast (autocast's own rule for layer_norm).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x, key_mask, want_qk=False, want_probs=False):
        attended, details = self.attn(self.ln_1(x), key_mask, want_qk, want_probs)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, details


@dataclass
class EncoderOutput:
    hidden: torch.Tensor                                      # (B, T, C) after the final LayerNorm
    hidden_states: list[torch.Tensor] | None = None           # n_layer + 1 tensors (B, T, C): the input, then each block's output
    attention: dict[int, AttentionDetails] = field(default_factory=dict)  # layer index -> details, for the layers asked for
    num_layers: int = 0
    mask: torch.Tensor | None = None                          # bool (B, T): the key mask used, True at real tokens

    def attention_at(self, layer: int) -> AttentionDetails:
        """The recorded details of one layer; negative indices count from the last layer."""
        index = layer % self.num_layers if self.num_layers else layer
        if index not in self.attention:
            raise ValueError(f"layer {layer} was not recorded; pass details_from=({layer},) to the model")
        return self.attention[index]


class Encoder(nn.Module):
    """A stack of blocks and a final LayerNorm.

    details_from: layer indices (negative counts from the end) whose queries and keys
    are returned; attention_probs=True also returns their explicit soft-max attention.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)

    def forward(self, x, key_mask, details_from=(), attention_probs=False, hidden_states=False):
        n = len(self.blocks)
        wanted = set()
        for layer in details_from:
            if not -n <= layer < n:
                raise ValueError(f"details_from has layer {layer}, but the encoder has {n} layers")
            wanted.add(layer % n)
        states = [x] if hidden_states else None
        attention = {}
        for i, block in enumerate(self.blocks):
            x, details = block(x, key_mask, want_qk=i in wanted, want_probs=attention_probs and i in wanted)
            if details is not None:
                attention[i] = details
            if hidden_states:
                states.append(x)
        return EncoderOutput(self.ln_f(x), states, attention, n, key_mask)


# -----------------------------------------------------------------------------
# Embeddings

class ImageEmbedding(nn.Module):
    """ViT input: a linear projection of non-overlapping patches, a [CLS] token, position embeddings.

    Images of another size than `image_size` (real photographs keep their aspect ratio) get the
    grid of position embeddings interpolated to their own grid of patches, as ViLT does. A batch
    of such images is padded to its largest one; `pixel_mask` says which pixels are real, and the
    returned token mask hides the padded patches from attention.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.image_size, self.patch_size = cfg.image_size, cfg.patch_size
        # a convolution with kernel = stride = patch size is a linear map of each flattened patch
        self.patch = nn.Conv2d(3, cfg.n_embd, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.n_embd))
        self.position = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, cfg.n_embd))
        self.dropout = nn.Dropout(cfg.dropout)

    def grid_positions(self, rows: int, cols: int):
        """Position embeddings of a rows x cols grid of patches: (rows * cols, C)."""
        side = self.image_size // self.patch_size
        grid = self.position[0, 1:]                                      # (side * side, C)
        if (rows, cols) == (side, side):
            return grid
        grid = grid.T.reshape(1, -1, side, side)                         # (1, C, side, side)
        grid = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=True)  # (1, C, rows, cols)
        return grid.reshape(-1, rows * cols).T                           # (rows * cols, C)

    def sampled_positions(self, rows, cols, h: int, w: int):
        """Position embeddings of each image's own rows x cols grid, in an h x w padded grid: (B, h * w, C).

        The same bilinear interpolation (align_corners=True) as grid_positions, written as one
        grid_sample over the batch: patch (i, j) of a rows x cols grid reads the trained grid at
        (i / (rows - 1), j / (cols - 1)) of its extent, in grid_sample's coordinates -1 .. 1.
        Positions of padded patches fall outside and are never attended to.
        """
        side = self.image_size // self.patch_size
        grid = self.position[0, 1:].T.reshape(1, -1, side, side)         # (1, C, side, side)
        B = rows.shape[0]

        def coordinates(n, extent):                                      # (B, n): -1 .. 1 over the real extent
            steps = torch.arange(n, device=extent.device, dtype=grid.dtype)
            return -1 + 2 * steps / (extent[:, None] - 1).clamp(min=1)
        y, x = coordinates(h, rows), coordinates(w, cols)                # (B, h), (B, w)
        where = torch.stack([x[:, None, :].expand(B, h, w), y[:, :, None].expand(B, h, w)], dim=-1)  # (B, h, w, 2)
        sampled = F.grid_sample(grid.expand(B, -1, -1, -1), where, mode="bilinear", align_corners=True)
        return sampled.flatten(2).transpose(1, 2)                        # (B, h * w, C)

    def forward(self, images, pixel_mask=None):
        """images: float (B, 3, H, W) in about [-1, 1], H and W multiples of the patch size;
        pixel_mask: bool (B, H, W), True at real pixels (None: every pixel is real).
        Returns the tokens (B, 1 + Np, C) and their mask, bool (B, 1 + Np)."""
        p = self.patch_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] % p or images.shape[-2] % p:
            raise ValueError(f"images must be (B, 3, H, W) with H and W multiples of the patch size {p}, "
                             f"got {tuple(images.shape)}")
        if pixel_mask is not None and pixel_mask.shape != (images.shape[0], *images.shape[-2:]):
            raise ValueError(f"pixel_mask must be (B, H, W) = {(images.shape[0], *images.shape[-2:])}, "
                             f"got {tuple(pixel_mask.shape)}")
        patches = self.patch(images)                                     # (B, C, h, w)
        B, C, h, w = patches.shape
        patches = patches.flatten(2).transpose(1, 2)                     # (B, h * w, C)
        if pixel_mask is None:
            positions = self.grid_positions(h, w).expand(B, -1, -1)      # (B, h * w, C)
            patch_mask = torch.ones(B, h * w, dtype=torch.bool, device=images.device)
        else:
            # Padding is added at the bottom and right, in whole patches: a patch is real if its
            # top-left pixel is. Each image gets the grid of its own real size (rows x cols),
            # sampled from the trained grid as grid_positions does, for the whole batch at once.
            patch_mask = pixel_mask[:, ::p, ::p]                         # (B, h, w)
            rows, cols = patch_mask[:, :, 0].sum(1), patch_mask[:, 0, :].sum(1)   # (B,), (B,)
            positions = self.sampled_positions(rows, cols, h, w)         # (B, h * w, C)
            patch_mask = patch_mask.flatten(1)                           # (B, h * w)
        cls = (self.cls + self.position[:, :1]).expand(B, -1, -1)        # (B, 1, C)
        x = torch.cat([cls, patches + positions], dim=1)                 # (B, 1 + h * w, C)
        mask = torch.cat([patch_mask.new_ones(B, 1), patch_mask], dim=1)  # (B, 1 + h * w)
        return self.dropout(x), mask


class TextEmbedding(nn.Module):
    """BERT-style input: word embeddings plus learned position embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_text_len = cfg.max_text_len
        self.token = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.position = nn.Parameter(torch.zeros(1, cfg.max_text_len, cfg.n_embd))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, text_ids):
        # text_ids: long (B, L), [CLS] first, padded with [PAD] = 0
        L = text_ids.shape[1]
        if L > self.max_text_len:
            raise ValueError(f"text_ids has length {L}, longer than max_text_len={self.max_text_len}")
        x = self.token(text_ids) + self.position[:, :L]             # (B, L, C)
        return self.dropout(x)


def init_weights(module: nn.Module) -> None:
    """GPT-2 / ViT initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, (ImageEmbedding, TextEmbedding)):
        nn.init.normal_(module.position, std=0.02)
        if isinstance(module, ImageEmbedding):
            nn.init.normal_(module.cls, std=0.02)


# -----------------------------------------------------------------------------
# The two towers of the student

class ImageEncoder(nn.Module):
    """The image tower (a ViT): it never sees words."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = ImageEmbedding(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, images, pixel_mask=None, **details) -> EncoderOutput:
        x, mask = self.embed(images, pixel_mask)                                 # (B, Nv, C), bool (B, Nv)
        return self.encoder(x, mask, **details)


class TextEncoder(nn.Module):
    """The text tower: it never sees pixels."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = TextEmbedding(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, text_ids, text_mask, **details) -> EncoderOutput:
        return self.encoder(self.embed(text_ids), text_mask, **details)


class TaskHead(nn.Module):
    """DiDE's classifier: Linear(d_in, 2h) -> LayerNorm -> GELU -> Linear(2h, classes)."""

    def __init__(self, d_in: int, n_embd: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 2 * n_embd), nn.LayerNorm(2 * n_embd), nn.GELU(),
                                 nn.Linear(2 * n_embd, num_classes))

    def forward(self, x):
        return self.net(x)


NUM_IMAGES = {"reasoning": 2, "entailment": 1, "vqa": 1, "itm": 1}   # images per example; itm: pre-training


def make_heads(cfg: ModelConfig) -> nn.ModuleDict:
    """One head per task. Reasoning classifies two pooled vectors (one per image) concatenated."""
    h = cfg.n_embd
    return nn.ModuleDict({
        "reasoning": TaskHead(2 * h, h, 2),            # NLVR2: true / false
        "entailment": TaskHead(h, h, 3),               # SNLI-VE: entailment / neutral / contradiction
        "vqa": TaskHead(h, h, cfg.num_answers),        # VQA: one logit per answer
        "itm": TaskHead(h, h, 2),                      # pre-training, image-text matching: matched / not
    })


def check_task(task: str, num_images: int) -> None:
    """A known task, given the number of images per example it takes."""
    if task not in NUM_IMAGES:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(NUM_IMAGES)}")
    if num_images != NUM_IMAGES[task]:
        raise ValueError(f"task {task!r} takes {NUM_IMAGES[task]} image(s) per example, got {num_images}")


@dataclass
class ModelOutput:
    logits: torch.Tensor                       # (B, classes)
    text: EncoderOutput | None = None          # student: the text tower's output
    image: EncoderOutput | None = None         # student: the image tower's output, images of an example flattened (B*K, Nv, C)
    fusion: list[EncoderOutput] | None = None  # teacher: one joint output per image of the example
    mlm_logits: torch.Tensor | None = None     # teacher pre-training: (B, L, vocab), a word score per text position
    images_per_example: int = 1                # K (reasoning: 2): unflattens `image`, also when B is 0


class DualEncoder(nn.Module):
    """DiDE's student: image and text towers, interacting only through `fuse` on the pooled vectors.

    Because the towers are independent, image features can be computed once
    (`encode_image`) and reused for every question about that image (`classify`).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.text_encoder = TextEncoder(cfg)
        h = cfg.n_embd
        # fuse([t_cls ; v_cls]) = Linear(2h, 2h) -> LayerNorm -> GELU -> Linear(2h, h)
        self.fuse = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.LayerNorm(2 * h), nn.GELU(), nn.Linear(2 * h, h))
        self.heads = make_heads(cfg)
        self.apply(init_weights)

    def encode_image(self, images, pixel_mask=None, **details) -> EncoderOutput:
        return self.image_encoder(images, pixel_mask, **details)

    def encode_text(self, text_ids, text_mask, **details) -> EncoderOutput:
        return self.text_encoder(text_ids, text_mask, **details)

    def classify(self, task, text_cls, image_cls):
        """The shallow interaction. text_cls: (B, C); image_cls: (B, K, C), K images per example."""
        K = image_cls.shape[1]
        check_task(task, K)
        text_cls = text_cls[:, None, :].expand(-1, K, -1)                      # (B, K, C)
        fused = self.fuse(torch.cat([text_cls, image_cls], dim=-1))            # (B, K, C)
        return self.heads[task](fused.flatten(1))                              # (B, classes)

    def forward(self, batch, task, **details) -> ModelOutput:
        # batch["images"]: (B, K, 3, H, W); batch["text_ids"], batch["text_mask"]: (B, L);
        # batch["pixel_mask"] (real data only): bool (B, K, H, W), True at real pixels
        images, pixel_mask = batch["images"], batch.get("pixel_mask")
        B, K = images.shape[:2]
        text = self.encode_text(batch["text_ids"], batch["text_mask"], **details)
        pixel_mask = pixel_mask.flatten(0, 1) if pixel_mask is not None else None
        image = self.encode_image(images.flatten(0, 1), pixel_mask, **details)  # (B*K, Nv, C): K images encoded as a batch
        # (B, K, C); C named, not -1: a DDP process whose real images were all unreadable has B = 0
        image_cls = image.hidden[:, 0].view(B, K, self.config.n_embd)
        logits = self.classify(task, text.hidden[:, 0], image_cls)
        return ModelOutput(logits, text=text, image=image, images_per_example=K)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
