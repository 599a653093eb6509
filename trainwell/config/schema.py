"""The typed config tree.

Every section is a dataclass; every field carries its default, a one-line help text and its
valid range or choices in ``metadata``. The loader (:mod:`trainwell.config.load`) validates a
recipe against this tree before any work starts. Sections whose shape depends on a choice
(``model.name = "gpt"``) are *variants*: the ``name`` key picks the dataclass that validates
the rest of the section, so each model, data source and objective carries its own options.

This module must stay free of heavy imports (torch, numpy): ``trainwell --help`` and recipe
validation import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
        choices: tuple[Any, ...] | None = None, trajectory: bool = True) -> Any:
    """A config field with its help text and valid range (read by the loader).

    ``trajectory=False``: the key does not change what is trained (evaluation, logging, videos), so a
    run may be resumed with it changed; every other key is in the config hash of each checkpoint.
    """
    meta = {"help": help, "min": min, "max": max, "choices": choices, "trajectory": trajectory}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class Invalid(Exception):
    """Settings that each pass their own checks but cannot work together; ``key`` is the one to change
    (the loader says where it came from: the recipe or a --set flag)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key, self.message = key, message


def divisors(n: int) -> str:
    small = [d for d in range(1, min(n, 4096) + 1) if n % d == 0]
    return ", ".join(map(str, small[:12])) + (", ..." if len(small) > 12 else "")


# --------------------------------------------------------------------------- sections


@dataclass
class RunConfig:
    name: str = opt("", "run name; the run directory defaults to <dir>/<name>-<timestamp>")
    dir: str = opt("runs", "folder that holds run directories")


@dataclass
class TextDataConfig:
    """Character-level text: the Python stdlib's own source, or one text file."""

    name: str = opt("text", "data source", choices=("text",))
    source: str = opt("stdlib", "'stdlib' (this Python's standard library source) or 'file'",
                      choices=("stdlib", "file"))
    path: str = opt("", "text file to train on when source = 'file'")
    val_fraction: float = opt(0.05, "share held out for validation: whole files for 'stdlib', "
                              "the last part of the text for 'file'", min=0.001, max=0.5)
    context: int = opt(128, "characters per training sequence", min=2)
    min_char_count: int = opt(1, "characters seen fewer times than this map to <unk>", min=1)
    cache_dir: str = opt("", "token cache folder (default: $TRAINWELL_CACHE or ~/.cache/trainwell)")
    replay_fraction: float = opt(0.0, "transfer: share of each batch's sequences drawn from the pretraining "
                                 "text of train.init_from (replay against forgetting)", min=0.0, max=0.9)
    packages: list[str] = opt([], "stdlib: read only these top-level packages or modules (e.g. ['email', "
                              "'json']; [] = all)")
    exclude_packages: list[str] = opt([], "stdlib: leave these top-level packages or modules out")

    def check(self, cfg: "Config") -> None:
        # (a missing data.path or train.init_from is missing input, reported when the run reads it: the
        # finetune recipes are complete without them until then)
        replayed = round(cfg.train.batch_size * self.replay_fraction)
        if self.replay_fraction > 0 and not 1 <= replayed < cfg.train.batch_size:
            raise Invalid("data.replay_fraction", f"data.replay_fraction = {self.replay_fraction} of train.batch_size "
                                                  f"= {cfg.train.batch_size} is {replayed} replayed sequences per "
                                                  f"batch; it must be between 1 and batch_size - 1")


@dataclass
class ArrayDataConfig:
    """Samples that fit in memory: scikit-learn's bundled data, a folder of images, or a table."""

    name: str = opt("sklearn", "data source", choices=("sklearn", "image_folder", "table"))
    dataset: str = opt("digits", "bundled scikit-learn dataset (source 'sklearn')",
                       choices=("digits", "iris", "wine", "breast_cancer", "diabetes"))
    path: str = opt("", "a folder with one sub-folder of images per class ('image_folder'), "
                    "or a .csv / .parquet file ('table')")
    label: str = opt("label", "name of the label column of a table")
    text: str = opt("", "table: name of a text column to classify with model.name = 'hf' (tokenized by the "
                    "model's own tokenizer); '' = numeric feature columns")
    task: str = opt("auto", "classify, regress, or auto (integer/text labels classify, real numbers regress)",
                    choices=("auto", "classify", "regress"))
    image_size: int = opt(0, "resize images to N x N pixels (0 = the size of the first image)", min=0)
    grayscale: bool = opt(True, "read images as one grey channel (false: RGB)")
    classes: list[str] = opt([], "the class names, in order (default: those found in the data); fixes the "
                             "label ids when some data holds only some classes, e.g. one federated silo")
    test_fraction: float = opt(0.2, "share held out as the test split (stratified for classification)",
                               min=0.05, max=0.5)
    split_seed: int = opt(0, "seed of the fixed train/test split (recorded in the run)", min=0)
    standardize: bool = opt(True, "scale features to zero mean and unit variance (train statistics); "
                            "regression targets too")


@dataclass
class GPTConfig:
    """A GPT-style decoder-only transformer (pre-norm; learned or rotary positions)."""

    name: str = opt("gpt", "model architecture", choices=("gpt",))
    n_layer: int = opt(4, "transformer blocks", min=1)
    n_head: int = opt(4, "attention heads per block", min=1)
    n_embd: int = opt(128, "width of the residual stream", min=1)
    context: int = opt(0, "longest sequence the model accepts (0 = data.context)", min=0)
    dropout: float = opt(0.0, "dropout probability", min=0.0, max=1.0)
    bias: bool = opt(False, "bias terms in linear layers and layer norms")
    tie_embeddings: bool = opt(True, "share the token embedding with the output layer")
    position: str = opt("learned", "position information: learned absolute embeddings, or rotary "
                        "(RoPE, relative positions inside attention)", choices=("learned", "rope"))
    activation: str = opt("gelu", "MLP activation: gelu, or relu2 (ReLU squared, So et al. 2021 'Primer'; "
                          "used by the modded-nanogpt speedruns)", choices=("gelu", "relu2"))
    mlp_ratio: int = opt(4, "MLP hidden width as a multiple of n_embd", min=1)
    norm: str = opt("layernorm", "normalisation: layernorm, or rmsnorm (no mean subtraction, a little cheaper)",
                    choices=("layernorm", "rmsnorm"))
    qk_norm: bool = opt(False, "normalise queries and keys per head before attention (QK-norm): bounded "
                        "attention logits, so higher learning rates stay stable")
    qk_norm_type: str = opt("rms", "QK-norm's normalisation: rms (RMSNorm, as modded-nanogpt and OLMo 2), or layer "
                            "(LayerNorm without gain or bias; on CPU torch has a fused kernel for it and none "
                            "for RMSNorm: 2x cheaper)", choices=("rms", "layer"))
    logit_softcap: float = opt(0.0, "cap output logits smoothly at +-c with c * tanh(logits / c) (0 = off; "
                               "modded-nanogpt uses 15-30)", min=0.0)
    zero_init_proj: bool = opt(False, "start every block's output projections at zero, so each block begins "
                               "as the identity (as in the modded-nanogpt speedruns)")

    def check(self, cfg: "Config") -> None:
        if self.n_embd % self.n_head:
            raise Invalid("model.n_head", f"model.n_embd = {self.n_embd} must split evenly into model.n_head = "
                                          f"{self.n_head} attention heads; use a divisor of {self.n_embd} "
                                          f"({divisors(self.n_embd)}) or change model.n_embd")
        if self.position == "rope" and (self.n_embd // self.n_head) % 2:
            raise Invalid("model.n_head", f"rotary positions rotate pairs of features, so each head's width "
                                          f"model.n_embd / model.n_head = {self.n_embd // self.n_head} must be even; "
                                          f"change model.n_head or model.n_embd, or set model.position = 'learned'")
        context = getattr(cfg.data, "context", None)
        if self.context and context is not None and self.context < context:
            raise Invalid("model.context", f"model.context = {self.context} is shorter than data.context = "
                                           f"{context}; raise model.context or set it to 0 (= data.context)")


@dataclass
class EncoderConfig(GPTConfig):
    """A bidirectional transformer encoder (BERT-style): the GPT blocks without the causal mask."""

    name: str = opt("encoder", "model architecture", choices=("encoder",))
    # Without a causal mask, attention has no built-in sense of order; learned absolute positions
    # left the encoder on a unigram plateau for 600+ steps in code_mlm, rotary ones do not.
    position: str = opt("rope", "position information: learned absolute embeddings, or rotary "
                        "(RoPE, relative positions inside attention)", choices=("learned", "rope"))


@dataclass
class MLPConfig:
    name: str = opt("mlp", "model architecture", choices=("mlp",))
    hidden: list[int] = opt([128, 128], "width of each hidden layer")
    dropout: float = opt(0.1, "dropout probability after each hidden layer", min=0.0, max=1.0)


@dataclass
class CNNConfig:
    """Conv-BN-ReLU blocks (each followed by 2x2 max-pooling), global average pool, linear head."""

    name: str = opt("cnn", "model architecture", choices=("cnn",))
    channels: list[int] = opt([32, 64], "output channels of each conv block (two 3x3 convs per block)")
    dropout: float = opt(0.2, "dropout before the classifier", min=0.0, max=1.0)


@dataclass
class HFConfig:
    """A Hugging Face Transformers encoder from a local folder, plus a classification head."""

    name: str = opt("hf", "model architecture", choices=("hf",))
    path: str = opt("", "local folder with config.json, model.safetensors and the tokenizer (nothing is "
                    "downloaded)")
    pretrained: bool = opt(True, "load the folder's weights (false: same architecture, random init)")
    pooling: str = opt("mean", "sentence vector: mean over tokens or the first ([CLS]) token",
                       choices=("mean", "cls"))
    dropout: float = opt(0.1, "dropout before the classification head", min=0.0, max=1.0)
    max_length: int = opt(64, "tokens per text (longer ones are cut, shorter padded)", min=2)


@dataclass
class ObjectiveConfig:
    name: str = opt("lm", "objective: lm (next token), classify (cross-entropy), regress (MSE)",
                    choices=("lm", "classify", "regress"))
    label_smoothing: float = opt(0.0, "label smoothing for classify", min=0.0, max=0.5)


@dataclass
class MLMObjectiveConfig:
    """BERT-style masked-token prediction."""

    name: str = opt("mlm", "objective", choices=("mlm",))
    mask_prob: float = opt(0.15, "share of tokens chosen for prediction", min=0.01, max=0.9)
    replace_mask: float = opt(0.8, "of the chosen: share replaced by the mask token", min=0.0, max=1.0)
    replace_random: float = opt(0.1, "of the chosen: share replaced by a random token (rest unchanged)",
                                min=0.0, max=1.0)

    def check(self, cfg: "Config") -> None:
        if self.replace_mask + self.replace_random > 1.0:
            raise Invalid("objective.replace_random", f"objective.replace_mask + objective.replace_random = "
                                                      f"{self.replace_mask + self.replace_random:g} are shares of the "
                                                      f"chosen tokens and cannot add up to more than 1")


@dataclass
class OptimConfig:
    name: str = opt("adamw", "optimizer: adamw, sgd, or muon (Muon for the transformer blocks' matrices, AdamW "
                    "with lr/beta/eps/weight_decay below for embeddings, head, norms and biases; see "
                    "trainwell/engine/muon.py)", choices=("adamw", "sgd", "muon"))
    lr: float = opt(1e-3, "peak learning rate (with muon: of the AdamW part)", min=0.0)
    weight_decay: float = opt(0.1, "decoupled weight decay on matrices (not biases/norms)", min=0.0)
    beta1: float = opt(0.9, "AdamW beta1", min=0.0, max=1.0)
    beta2: float = opt(0.99, "AdamW beta2", min=0.0, max=1.0)
    eps: float = opt(1e-8, "AdamW epsilon", min=0.0)
    momentum: float = opt(0.9, "SGD momentum", min=0.0, max=1.0)
    grad_clip: float = opt(1.0, "clip the global gradient norm to this (0 = off)", min=0.0)
    muon_lr: float = opt(0.02, "muon: peak learning rate of the block matrices (follows the same schedule)",
                         min=0.0)
    muon_momentum: float = opt(0.95, "muon: Nesterov momentum", min=0.0, max=1.0)
    muon_weight_decay: float = opt(0.0, "muon: decoupled weight decay on the block matrices", min=0.0)
    muon_ns_steps: int = opt(5, "muon: Newton-Schulz iterations per orthogonalisation", min=1)
    muon_ns_dtype: str = opt("auto", "muon: dtype of the Newton-Schulz matmuls: auto (bf16 where bf16 matmuls "
                             "are native: CUDA, AMX/AVX-512-BF16 CPUs; else fp32), fp32 or bf16",
                             choices=("auto", "fp32", "bf16"))

    def check(self, cfg: "Config") -> None:
        for key in ("beta1", "beta2"):
            if self.name == "adamw" and getattr(self, key) >= 1.0:
                raise Invalid(f"optim.{key}", f"optim.{key} = {getattr(self, key)} must be below 1 (AdamW divides "
                                              f"by 1 - {key}^step); 0.9 / 0.99 are usual")


@dataclass
class ScheduleConfig:
    name: str = opt("cosine", "learning-rate schedule after warmup: cosine, linear, constant, or wsd (warmup, "
                    "stable at optim.lr, then a linear decay over the last decay_fraction of the steps)",
                    choices=("cosine", "linear", "constant", "wsd"))
    warmup_steps: int = opt(100, "linear warmup steps from 0 to optim.lr", min=0)
    min_lr_ratio: float = opt(0.1, "final learning rate as a fraction of optim.lr", min=0.0, max=1.0)
    decay_fraction: float = opt(0.3, "wsd: share of all steps spent decaying to min_lr_ratio at the end",
                                min=0.0, max=1.0)


@dataclass
class TrainConfig:
    steps: int = opt(1000, "optimizer steps to train (ignored when epochs > 0)", min=1)
    epochs: int = opt(0, "train for this many passes over the data instead of steps", min=0)
    batch_size: int = opt(32, "samples per micro-batch, summed over all processes (global batch; each of "
                          "N data-parallel ranks takes batch_size / N of it)", min=1)
    grad_accum: int = opt(1, "micro-batches per optimizer step", min=1)
    seed: int = opt(1337, "seed for initialisation, data order and dropout", min=0)
    precision: str = opt("auto", "auto (bf16 where measured faster on this device: CUDA with bf16, a CPU whose "
                         "bf16 matmuls beat fp32 on the model's shapes; else fp32), fp32, bf16 (autocast on "
                         "CPU and CUDA) or fp16 (CUDA, loss scaling)", choices=("auto", "fp32", "bf16", "fp16"))
    activation_checkpointing: int = opt(0, "recompute every k-th transformer block in backward (0 = off)",
                                        min=0)
    compile: bool = opt(False, "torch.compile the model")
    compile_backend: str = opt("inductor", "the torch.compile backend when compile is on: inductor (generated "
                               "kernels: the fast one), aot_eager (traced forward and backward graphs run by "
                               "eager kernels: compiles in seconds; for debugging and tests)",
                               choices=("inductor", "aot_eager"))
    device: str = opt("auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    init_from: str = opt("", "start from the model weights of this checkpoint folder (matching names "
                         "and shapes; e.g. a pretrained encoder)")
    threads: int = opt(0, "CPU threads for torch (0 = torch's default)", min=0)
    memory_check: bool = opt(True, "before allocating, plan the memory of a training step (`trainwell plan`) and "
                             "refuse a run that cannot fit in the memory free now", trajectory=False)


@dataclass
class AdapterConfig:
    """How a pretrained model (train.init_from) is adapted; see trainwell/adapters."""

    method: str = opt("none", "none (train the weights themselves, minus `freeze`), lora (low-rank adapters on a "
                      "frozen base) or qlora (lora on a 4-bit NF4 base)", choices=("none", "lora", "qlora"))
    rank: int = opt(8, "LoRA rank r", min=1)
    alpha: float = opt(16.0, "LoRA scale: the update B @ A is multiplied by alpha / rank", min=0.0)
    dropout: float = opt(0.0, "dropout on the input of the LoRA path", min=0.0, max=1.0)
    targets: list[str] = opt(["qkv", "proj", "fc"], "linear layers that get adapters (peft target_modules: "
                             "module-name suffixes)")
    modules_to_save: list[str] = opt([], "lora/qlora: modules trained in full next to the adapters and saved "
                                     "with them (peft modules_to_save), e.g. a new classification head")
    freeze: list[str] = opt([], "method 'none': freeze parameters whose names match these glob patterns "
                            "(e.g. 'tok_emb.*', 'blocks.0.*')")
    train_only: list[str] = opt([], "method 'none': freeze every parameter except those matching these glob "
                                "patterns (e.g. 'blocks.3.*', 'ln_f.*': the last block and the head)")
    quant_backend: str = opt("bitsandbytes", "qlora: library that stores the 4-bit base (see "
                             "bench/RESULTS.md, QLoRA backends)", choices=("bitsandbytes", "torchao"))

    def check(self, cfg: "Config") -> None:
        if self.method != "none" and (self.freeze or self.train_only):
            key = "adapter.freeze" if self.freeze else "adapter.train_only"
            raise Invalid(key, f"adapter.method = '{self.method}' trains only the adapters; {key} applies to "
                               f"method 'none' — remove it or set adapter.method = 'none'")
        if self.method != "none" and not self.targets:
            raise Invalid("adapter.targets", f"adapter.method = '{self.method}' needs at least one layer in "
                                             f"adapter.targets to put adapters on")


@dataclass
class EvalConfig:
    every: int = opt(250, "evaluate every N optimizer steps (0 = only at the end)", min=0)
    batches: int = opt(20, "validation batches per evaluation", min=1)
    samples: int = opt(3, "text samples generated at the end of training", min=0)
    sample_tokens: int = opt(200, "length of each sample", min=1)
    prompt: str = opt("def ", "prompt the samples start from")
    temperature: float = opt(0.8, "sampling temperature", min=0.0)
    top_k: int = opt(0, "sample from the k most likely tokens (0 = all)", min=0)
    stop_metric: str = opt("", "stop training once this evaluation metric reaches eval.stop_at "
                           "(e.g. 'val/return'; '' = never stop early)")
    stop_at: float = opt(0.0, "threshold for eval.stop_metric")
    retain: bool = opt(False, "transfer: also evaluate on the validation text of train.init_from's pretraining "
                       "data, logged as retain/loss (how much of it is forgotten)")
    stop_mode: str = opt("max", "max: stop when the metric >= stop_at; min: when <= stop_at",
                         choices=("max", "min"))


@dataclass
class CheckpointConfig:
    every: int = opt(500, "steps between checkpoints (the final step is always saved)", min=1)
    keep: int = opt(3, "keep the newest K checkpoints", min=1)
    keep_best: bool = opt(True, "also keep the checkpoint with the best evaluation (lowest val/loss; RL: highest val/return)")
    async_save: bool = opt(False, "write checkpoints in a background thread")


@dataclass
class LogConfig:
    every: int = opt(10, "log metrics every N steps", min=1)
    tensorboard: bool = opt(True, "write TensorBoard event files")
    plots: bool = opt(True, "draw PNG plots at the end")
    progress: str = opt("auto", "auto (live bar on a terminal, lines otherwise), lines or off",
                        choices=("auto", "lines", "off"))


@dataclass
class DistributedConfig:
    """How several processes (started by torchrun or `trainwell train --nproc N`) share the work.

    Only read when the launcher starts more than one process; a single process ignores it.
    """

    strategy: str = opt("ddp", "ddp: replicated model, gradient all-reduce; fsdp: FSDP2 (fully_shard), "
                        "parameters, gradients and optimizer state sharded across ranks",
                        choices=("ddp", "fsdp"))
    backend: str = opt("auto", "collective backend: auto (nccl on CUDA, gloo on CPU), gloo or nccl",
                       choices=("auto", "gloo", "nccl"))
    timeout_s: float = opt(600.0, "a collective (all-reduce, barrier, ...) waiting longer than this fails "
                           "with a message naming the rank and the operation (from the first step; set-up waits at "
                           "least 300 s, since ranks read data and build models at their own pace)", min=1.0)
    reshard_after_forward: bool = opt(True, "fsdp: free gathered parameters after forward (less memory, "
                                      "one more all-gather in backward)")


@dataclass
class FederatedConfig:
    """Federated training on Flower (trainwell/federated): silos train locally, only weights travel.

    Off while ``silos`` is 0. Any supervised (sklearn, image_folder, table) or text recipe becomes
    federated with ``silos > 0``: on one machine ``trainwell train`` runs Flower's simulation runtime,
    across machines ``trainwell federate server/client`` its deployment runtime.
    """

    silos: int = opt(0, "number of silos (Flower SuperNodes, one client each); 0 = not federated", min=0)
    rounds: int = opt(10, "federated rounds: send the global model, train locally, aggregate", min=1)
    clients_per_round: int = opt(0, "silos sampled for training each round (0 = all)", min=0)
    local_steps: int = opt(10, "optimizer steps each sampled silo trains per round", min=1)
    local_epochs: int = opt(0, "passes over its own data each silo trains per round instead of local_steps "
                            "(0 = use local_steps)", min=0)
    strategy: str = opt("fedavg", "Flower strategy that aggregates the silos' models",
                        choices=("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm",
                                 "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"))
    strategy_options: dict[str, Any] = opt({}, "keyword arguments of the Flower strategy's constructor, "
                                           "e.g. {proximal_mu = 0.01} (fedprox), {eta = 0.01} (fedadam), "
                                           "{beta = 0.2} (fedtrimmedavg), {num_malicious_nodes = 1} (krum)")
    partition: str = opt("iid", "how one machine's data is split into silos: iid (uniformly at random), "
                         "dirichlet (label shares per silo ~ Dirichlet(alpha)), folders (one entry of "
                         "silo_data per silo), packages (text: one stdlib top-level package per silo)",
                         choices=("iid", "dirichlet", "folders", "packages"))
    alpha: float = opt(0.5, "dirichlet: concentration; small (0.1) = each silo holds few labels", min=1e-4)
    partition_seed: int = opt(0, "seed of the split into silos", min=0)
    silo_data: str = opt("", "folders: a folder with one entry per silo (sorted by name): an image folder, "
                         "a table file or a text file each")
    packages: list[str] = opt([], "packages: the stdlib top-level packages, one silo each (e.g. ['email', "
                              "'json']); the recipe's data.packages should list the same")
    silo_eval: bool = opt(True, "also score the global model on each silo's own held-out split after every "
                          "round, where silos read their own data (folders, deployment)", trajectory=False)
    round_timeout_s: float = opt(600.0, "a silo that has not answered after this long is left out of the "
                                 "round (the summary names it)", min=1.0, trajectory=False)
    dp_epsilon: float = opt(0.0, "differential privacy: the (epsilon, dp_delta) budget of the whole run; "
                            "sets the Gaussian noise from an RDP accountant (0 = off)", min=0.0)
    dp_noise: float = opt(0.0, "differential privacy: the noise multiplier itself, instead of dp_epsilon "
                          "(noise std = dp_noise * dp_clip / clients per round)", min=0.0)
    dp_delta: float = opt(1e-5, "differential privacy: delta of the reported (epsilon, delta)", min=1e-12,
                          max=0.5)
    dp_clip: float = opt(1.0, "differential privacy: each silo's update (new - global weights) is clipped "
                         "to this L2 norm before it leaves the silo", min=1e-9)
    secure_aggregation: bool = opt(False, "SecAgg+: the server learns only the sum of the updates "
                                   "(not available with Flower 1.42's Message API; see README)")
    attack: str = opt("none", "robustness experiments: the first `attackers` silos send poisoned updates: "
                      "flip_labels (train on label C-1-y) or scale_update (send global + "
                      "attack_scale * update)", choices=("none", "flip_labels", "scale_update"))
    attackers: int = opt(1, "number of attacking silos when attack != 'none'", min=0)
    attack_scale: float = opt(-10.0, "scale_update: factor on the attackers' updates")


@dataclass
class Config:
    description: str = opt("", "one line shown by `trainwell recipes`")
    run: RunConfig = field(default_factory=RunConfig)
    data: Any = field(default_factory=TextDataConfig)
    model: Any = field(default_factory=GPTConfig)
    objective: Any = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)

    def check(self) -> None:
        """Every section's own cross-field check, then the combinations across sections."""
        for f in fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "check") and f.name != "check":
                section.check(self)
        check_combination(self)


@dataclass
class RealNVPConfig:
    """RealNVP normalizing flow (affine couplings, alternating pixel masks): exact likelihood."""

    name: str = opt("realnvp", "model architecture", choices=("realnvp",))
    couplings: int = opt(8, "affine coupling layers", min=2)
    hidden: int = opt(256, "width of each coupling's MLP", min=1)
    depth: int = opt(2, "hidden layers of each coupling's MLP", min=1)
    dropout: float = opt(0.0, "dropout inside the coupling MLPs", min=0.0, max=1.0)
    alpha: float = opt(0.05, "logit preprocessing squeezes pixels into [alpha, 1 - alpha] first",
                       min=1e-6, max=0.4)


@dataclass
class DensityObjectiveConfig:
    """Negative log-likelihood of uniformly dequantized pixels, reported in bits per dimension."""

    name: str = opt("density", "objective", choices=("density",))
    val_fraction: float = opt(0.1, "share of the training split held out to pick the best checkpoint "
                              "and the GMM baseline's component count", min=0.05, max=0.5)
    gmm_components: list[int] = opt([1, 2, 5, 10, 20], "component counts tried for the full-covariance "
                                    "GaussianMixture baseline")
    test_noise_seed: int = opt(12345, "seed of the one dequantization-noise draw for validation and test",
                               min=0)
    samples: int = opt(64, "model samples drawn into plots/samples.png", min=0, trajectory=False)


@dataclass
class EmbedCNNConfig:
    """Image encoder (conv blocks -> flatten -> linear) plus a projection head, for contrastive learning."""

    name: str = opt("embed_cnn", "model architecture", choices=("embed_cnn",))
    channels: list[int] = opt([32, 64], "output channels of each conv block (two 3x3 convs, then 2x2 max-pool)")
    embed_dim: int = opt(128, "width of the representation h (encoder output)", min=1)
    proj_dim: int = opt(64, "width of the projection z = head(h) that the contrastive loss sees", min=1)


@dataclass
class SimCLRObjectiveConfig:
    """SimCLR: NT-Xent between two augmented views of each image; k-means on the learned embedding."""

    name: str = opt("simclr", "objective", choices=("simclr",))
    temperature: float = opt(0.5, "softmax temperature of the NT-Xent loss", min=0.01, max=10.0)
    rotate_deg: float = opt(15.0, "augmentation: random rotation in [-r, r] degrees", min=0.0, max=180.0)
    scale: float = opt(0.1, "augmentation: random zoom in [1 - s, 1 + s]", min=0.0, max=0.9)
    shift_px: float = opt(1.0, "augmentation: random shift in [-p, p] pixels per axis", min=0.0)
    noise: float = opt(0.1, "augmentation: std of Gaussian pixel noise (standardised units)", min=0.0)
    pixel_drop: float = opt(0.1, "augmentation: share of pixels set to the background", min=0.0, max=0.9)
    clusters: int = opt(0, "k-means clusters (0 = the number of classes)", min=0)
    cluster_on: str = opt("projection", "what k-means clusters (L2-normalised): the projection z or the "
                          "encoder output h", choices=("projection", "encoder"))
    eval_seed: int = opt(12345, "seed of the one augmentation draw for validation views", min=0,
                         trajectory=False)


@dataclass
class GymDataConfig:
    """Experience from a gymnasium environment, collected by the policy being trained."""

    name: str = opt("gym", "data source", choices=("gym",))
    env_id: str = opt("CartPole-v1", "any registered gymnasium environment id")
    num_envs: int = opt(8, "environments stepped in parallel (gymnasium vector API)", min=1)
    rollout_steps: int = opt(32, "steps per environment in each rollout", min=1)
    total_env_steps: int = opt(50_000, "environment steps to train for (sets the optimizer steps)", min=1)
    gamma: float = opt(0.98, "discount factor", min=0.0, max=1.0)
    gae_lambda: float = opt(0.8, "GAE lambda", min=0.0, max=1.0)
    update_epochs: int = opt(20, "passes over each rollout", min=1)
    minibatch_size: int = opt(256, "samples per minibatch (one optimizer step each)", min=1)
    eval_episodes: int = opt(10, "deterministic-policy episodes per evaluation", min=1,
                              trajectory=False)
    eval_seed: int = opt(100_000, "first seed of the evaluation episodes (separate from training)", min=0,
                           trajectory=False)
    normalize_reward: bool = opt(False, "scale rewards by the running std of the discounted return "
                                 "(statistics saved in checkpoints)")
    video: bool = opt(True, "write episode.gif of one deterministic evaluation episode at the end "
                      "(needs the env's rgb_array rendering; pygame for classic control)", trajectory=False)

    def check(self, cfg: "Config") -> None:
        if getattr(cfg.objective, "norm_adv", False) and min(self.minibatch_size,
                                                              self.num_envs * self.rollout_steps) < 2:
            raise Invalid("data.minibatch_size", f"objective.norm_adv normalises advantages by their spread over a "
                                                 f"minibatch, which needs at least 2 samples (data.minibatch_size = "
                                                 f"{self.minibatch_size}, {self.num_envs * self.rollout_steps} per "
                                                 f"rollout); raise it or set objective.norm_adv = false")


@dataclass
class ReplayDataConfig:
    """Off-policy experience: epsilon-greedy steps in a gymnasium environment, kept in a replay buffer."""

    name: str = opt("replay", "data source", choices=("replay",))
    env_id: str = opt("CartPole-v1", "any registered gymnasium environment with discrete actions")
    num_envs: int = opt(1, "environments stepped in parallel (gymnasium vector API)", min=1)
    total_env_steps: int = opt(50_000, "environment steps to train for (sets the optimizer steps)", min=1)
    buffer_size: int = opt(50_000, "transitions the replay buffer holds (oldest overwritten)", min=1)
    learning_starts: int = opt(1_000, "random-action env steps collected before the first update", min=0)
    collect_steps: int = opt(256, "env steps collected between bursts of updates", min=1)
    updates_per_collect: int = opt(128, "optimizer steps (minibatches of train.batch_size) per burst", min=1)
    gamma: float = opt(0.99, "discount factor", min=0.0, max=1.0)
    target_every_env_steps: int = opt(10, "env steps between copies of the online network into the target "
                                      "network (SB3's target_update_interval); the copy is made after a "
                                      "collection, so at most once per burst of updates", min=1)
    double_q: bool = opt(True, "double DQN: the online network picks the next action, the target network "
                         "scores it (van Hasselt et al. 2016)")
    epsilon_start: float = opt(1.0, "exploration rate at the start", min=0.0, max=1.0)
    epsilon_end: float = opt(0.04, "exploration rate after the decay", min=0.0, max=1.0)
    epsilon_fraction: float = opt(0.16, "share of total_env_steps over which epsilon decays linearly",
                                  min=0.0, max=1.0)
    eval_episodes: int = opt(10, "greedy-policy episodes per evaluation", min=1,
                              trajectory=False)
    eval_seed: int = opt(100_000, "first seed of the evaluation episodes (separate from training)", min=0,
                           trajectory=False)
    video: bool = opt(True, "write episode.gif of one greedy evaluation episode at the end",
                      trajectory=False)


@dataclass
class ActorCriticConfig:
    name: str = opt("actor_critic", "model architecture", choices=("actor_critic",))
    hidden: list[int] = opt([64, 64], "hidden widths of the actor and of the critic (tanh)")
    normalize_obs: bool = opt(False, "normalise observations by running mean/std (kept in the model's "
                              "buffers, so checkpoints and evaluation use them)")


@dataclass
class PPOObjectiveConfig:
    name: str = opt("ppo", "objective", choices=("ppo",))
    clip: float = opt(0.2, "clip range of the probability ratio (and of the value change)", min=0.0)
    vf_coef: float = opt(0.5, "weight of the value loss", min=0.0)
    ent_coef: float = opt(0.0, "weight of the entropy bonus", min=0.0)
    clip_value: bool = opt(True, "clip the value loss like the policy ratio")
    norm_adv: bool = opt(True, "normalise advantages per minibatch")


@dataclass
class DQNObjectiveConfig:
    name: str = opt("dqn", "objective", choices=("dqn",))
    loss: str = opt("huber", "TD-error loss: huber (smooth L1, as in Mnih et al. 2015) or mse",
                    choices=("huber", "mse"))


@dataclass
class PythonObjectConfig:
    """A model, data or objective passed to ``trainwell.fit()`` as a Python object (a recipe cannot
    rebuild it; ``type`` records what it was, and a resume with another type is refused)."""

    name: str = opt("python", "an object given to trainwell.fit()", choices=("python",))
    type: str = opt("", "the object's class or function, module.qualname")


# --------------------------------------------------------------------------- learning from preferences


@dataclass
class HFCausalConfig:
    """A Hugging Face causal language model from a local folder (config.json, model.safetensors, tokenizer)."""

    name: str = opt("hf_causal", "model architecture", choices=("hf_causal",))
    path: str = opt("", "local folder with config.json, model.safetensors and the tokenizer (nothing is "
                    "downloaded)")
    pretrained: bool = opt(True, "load the folder's weights (false: same architecture, random init)")
    keep_dropout: bool = opt(False, "keep the folder's dropout in training (off by default, as TRL's trainers "
                             "turn it off: with dropout the policy's log-probs are noisy against the "
                             "reference's and the sampler's)")


@dataclass
class CompletionDataConfig:
    """Rows of prompts (and completions) for SFT, reward modelling, DPO, PPO and GRPO (TRL's columns)."""

    name: str = opt("sft", "data source: sft (prompt, completion), pairs (prompt, chosen, rejected) or prompts "
                    "(prompt)", choices=("sft", "pairs", "prompts"))
    path: str = opt("", "JSONL or Parquet file of training rows ('' = built-in code snippets of this Python's "
                    "standard library)")
    eval_path: str = opt("", "JSONL or Parquet file of held-out rows ('' = a fixed split of data.path: rows "
                         "whose prompt hashes into data.eval_fraction)")
    eval_fraction: float = opt(0.05, "share of rows held out when data.eval_path is not given", min=0.0, max=0.5)
    rows: int = opt(0, "use only the first N training rows (0 = all)", min=0)
    context: int = opt(128, "longest prompt + completion in tokens (the model's context when model.context = 0); "
                       "longer completions are cut, longer prompts are an error", min=2)
    builtin: str = opt("stdlib", "built-in rows when data.path is empty: stdlib (snippets of this Python's "
                       "standard library) or exec_tasks (one-line functions with hidden tests, for learning "
                       "from execution: trainwell/data/exec_tasks.py)", choices=("stdlib", "exec_tasks"))
    cache_dir: str = opt("", "cache folder for the built-in snippets (default: $TRAINWELL_CACHE or "
                         "~/.cache/trainwell)")
    prompt_chars: int = opt(64, "built-in snippets: longest prompt (a function's first lines) in characters",
                            min=8)
    completion_chars: int = opt(64, "built-in snippets: completion length in characters (the code that follows)",
                                min=1)
    max_new_tokens: int = opt(64, "tokens each sampled completion gets (rollouts and evaluation samples)", min=1)
    temperature: float = opt(1.0, "sampling temperature of completions (1 = the policy's own distribution, "
                             "which is what KL to the reference measures)", min=0.0)
    top_k: int = opt(0, "sample from the k most likely tokens (0 = all)", min=0)
    stop: list[str] = opt([], "strings that end a sampled completion (cut before them)")
    eval_samples: int = opt(4, "held-out prompts whose completions are written to samples/step-N.txt at every "
                            "evaluation", min=0, trajectory=False)


@dataclass
class SFTDataConfig(CompletionDataConfig):
    name: str = opt("sft", "data source", choices=("sft",))


@dataclass
class PairDataConfig(CompletionDataConfig):
    name: str = opt("pairs", "data source", choices=("pairs",))


@dataclass
class PromptDataConfig(CompletionDataConfig):
    """Prompts only: the policy samples the completions itself (PPO, GRPO)."""

    name: str = opt("prompts", "data source", choices=("prompts",))
    prompts_per_rollout: int = opt(8, "prompts sampled per rollout", min=1)
    group_size: int = opt(4, "completions sampled per prompt (GRPO's G; PPO usually 1)", min=1)
    update_epochs: int = opt(1, "passes over each rollout", min=1)
    minibatch_size: int = opt(0, "completions per optimizer step (0 = the whole rollout)", min=0)
    eval_prompts: int = opt(32, "held-out prompts scored at every evaluation (one completion each)", min=1,
                            trajectory=False)
    eval_rewards: list[str] = opt([], "extra reward functions scored at evaluation only (never trained on), "
                                  "logged as val/rewards/<name>", trajectory=False)
    turns: int = opt(1, "attempts per episode (RLEF's multi-turn episodes): after a failed attempt the feedback on "
                     "the row's visible tests is appended and the policy tries again; the reward scores the last "
                     "attempt (needs visible_inputs/visible_outputs columns, as data.builtin = 'exec_tasks' has)",
                     min=1, max=8)


@dataclass
class SFTObjectiveConfig:
    """Supervised fine-tuning: next-token cross-entropy on the completion tokens only."""

    name: str = opt("sft", "objective", choices=("sft",))


@dataclass
class RewardObjectiveConfig:
    """Bradley-Terry reward model: -log sigmoid(r(x, y_chosen) - r(x, y_rejected))."""

    name: str = opt("reward", "objective", choices=("reward",))
    center_coef: float = opt(0.0, "reward centring: adds coef * mean((r_chosen + r_rejected)^2), keeping rewards "
                             "near 0 (Eisenstein et al. 2023; TRL's center_rewards_coefficient, e.g. 0.01)", min=0.0)


@dataclass
class DPOLossConfig:
    """The DPO loss's own keys, shared by offline (dpo) and online (online_dpo) DPO."""

    name: str = opt("dpo", "objective", choices=("dpo",))
    beta: float = opt(0.1, "KL strength: the implicit reward is beta * log(pi / pi_ref)", min=0.0)
    loss_type: str = opt("sigmoid", "sigmoid (DPO), ipo (Azar et al. 2023) or hinge (SLiC, Zhao et al. 2023)",
                         choices=("sigmoid", "ipo", "hinge"))
    label_smoothing: float = opt(0.0, "sigmoid: assumed share of flipped labels (conservative DPO)", min=0.0,
                                 max=0.5)


@dataclass
class DPOObjectiveConfig(DPOLossConfig):
    """Direct preference optimisation (Rafailov et al. 2023) and its IPO / hinge variants."""

    reference: str = opt("precompute", "the frozen reference: precompute (its log-probs of every pair, once, "
                         "kept in the checkpoint), model (a frozen copy scores each batch) or adapters (lora/qlora: "
                         "the same model with its adapters off)", choices=("precompute", "model", "adapters"))


@dataclass
class RLObjectiveConfig:
    """What PPO and GRPO share: the reward, the reference and the clipped ratio."""

    name: str = opt("grpo", "objective", choices=("grpo", "ppo_lm"))
    reward_model: str = opt("", "reward-model checkpoint, run directory or recipe:NAME scoring each completion")
    reward_funcs: list[str] = opt([], "reward functions (module:function, or a shipped one: 'code_valid', 'execution' (run in the sandbox against the row's tests), 'execution_passed'), called "
                                  "as f(prompts=..., completions=..., **columns) -> list of floats, as TRL's "
                                  "reward_funcs")
    reward_weights: list[float] = opt([], "weight of each reward (the reward model first, then reward_funcs; "
                                      "default 1 each)")
    reference: str = opt("auto", "the frozen reference for the KL term: model (a frozen copy of the starting "
                         "model), adapters (lora/qlora: adapters off), none, or auto (adapters with LoRA, else "
                         "model; none when the KL coefficient is 0)", choices=("auto", "model", "adapters", "none"))
    clip: float = opt(0.2, "clip range of the probability ratio", min=0.0)


@dataclass
class GRPOObjectiveConfig(RLObjectiveConfig):
    """Group relative policy optimisation (Shao et al. 2024): no critic, advantages within each prompt's group."""

    name: str = opt("grpo", "objective", choices=("grpo",))
    beta: float = opt(0.0, "weight of the KL(pi || pi_ref) term (k3 estimator per token; 0 = no reference)",
                      min=0.0)
    clip_high: float = opt(0.0, "upper clip range (DAPO's clip-higher; 0 = objective.clip)", min=0.0)
    scale_rewards: str = opt("group", "divide advantages by the group's reward std (group), the batch's (batch), "
                             "or not at all (none: Dr. GRPO)", choices=("group", "batch", "none"))
    loss_type: str = opt("token", "average the loss over all completion tokens of the batch (token: DAPO, TRL's "
                         "default) or per completion first (sequence: the GRPO paper)",
                         choices=("token", "sequence"))
    kl_in_reward: bool = opt(False, "take the KL out of the loss and into the reward: each completion's reward "
                             "becomes r - beta * sum_t log(pi / pi_ref) before the group advantages. Its policy "
                             "gradient is that of E[r] - beta KL(pi || pi_ref) (exactly so with scale_rewards = "
                             "'none'), which the k3 term in the loss is not")


@dataclass
class PPOLMObjectiveConfig(RLObjectiveConfig):
    """PPO for language models (Ziegler et al. 2019, Ouyang et al. 2022): a per-token KL penalty to the
    reference, a value head, GAE over tokens, the reward at the end of the completion."""

    name: str = opt("ppo_lm", "objective", choices=("ppo_lm",))
    kl_coef: float = opt(0.05, "per-token KL penalty beta: reward_t = -beta * kl_t (+ the reward at the end)",
                         min=0.0)
    kl_estimator: str = opt("k1", "per-token KL estimate: k1 = log pi - log pi_ref, k3 = (r - 1) - log r with "
                            "r = pi_ref / pi (Schulman 2020: unbiased, never negative)", choices=("k1", "k3"))
    vf_coef: float = opt(0.1, "weight of the value loss", min=0.0)
    clip_value: float = opt(0.2, "clip range of the value change (0 = no clipping)", min=0.0)
    gamma: float = opt(1.0, "discount over tokens", min=0.0, max=1.0)
    lam: float = opt(0.95, "GAE lambda over tokens", min=0.0, max=1.0)
    whiten_advantages: bool = opt(True, "normalise advantages over each rollout's completion tokens")


@dataclass
class OnlineDPOObjectiveConfig(DPOLossConfig, RLObjectiveConfig):
    """Online DPO (Guo et al. 2024, "Direct language model alignment from online AI feedback"): each rollout
    the policy samples data.group_size completions per prompt, the reward (functions or a reward model: the
    judge) ranks them, and the DPO loss trains on (best, worst) of each group against the frozen reference."""

    name: str = opt("online_dpo", "objective", choices=("online_dpo",))
    label_temperature: float = opt(0.0, "0: the completion with the higher reward is chosen; t > 0: a noisy "
                                   "judge, chosen by a Bradley-Terry draw P(a over b) = sigmoid((r_a - r_b) / t) "
                                   "(data.group_size = 2)", min=0.0)


# Variant sections: the value of `name` picks the dataclass for the rest of the section.
# New models, data sources and objectives register here; a name with a colon ("my_pkg.nets:build")
# is the user's own, and its section takes any keys (config/load.py, import_section).
VARIANTS: dict[str, dict[str, type]] = {
    "data": {"python": PythonObjectConfig, "text": TextDataConfig, "gym": GymDataConfig, "replay": ReplayDataConfig, "sklearn": ArrayDataConfig, "image_folder": ArrayDataConfig,
             "table": ArrayDataConfig, "sft": SFTDataConfig, "pairs": PairDataConfig, "prompts": PromptDataConfig},
    "model": {"python": PythonObjectConfig, "actor_critic": ActorCriticConfig, "gpt": GPTConfig, "encoder": EncoderConfig, "mlp": MLPConfig, "cnn": CNNConfig,
              "realnvp": RealNVPConfig, "embed_cnn": EmbedCNNConfig, "hf": HFConfig, "hf_causal": HFCausalConfig},
    "objective": {"python": PythonObjectConfig, "ppo": PPOObjectiveConfig, "dqn": DQNObjectiveConfig, "lm": ObjectiveConfig, "classify": ObjectiveConfig, "regress": ObjectiveConfig,
                  "mlm": MLMObjectiveConfig, "density": DensityObjectiveConfig,
                  "simclr": SimCLRObjectiveConfig, "sft": SFTObjectiveConfig, "reward": RewardObjectiveConfig,
                  "dpo": DPOObjectiveConfig, "grpo": GRPOObjectiveConfig, "ppo_lm": PPOLMObjectiveConfig,
                  "online_dpo": OnlineDPOObjectiveConfig},
}

# Sections and keys that do not change the training trajectory: a run may be resumed with
# these changed. Everything else is part of the config hash stored in every checkpoint.
# (Single keys inside other sections say so themselves: opt(..., trajectory=False).)
NON_TRAJECTORY = ("description", "run.", "eval.", "checkpoint.", "log.", "data.cache_dir",
                  "train.threads", "train.compile", "distributed.")


# What each kind of data trains with: data.name -> (models, objectives). A "module:function" of the
# user's own fits anywhere. The paradigm builders (trainwell/paradigms) assume these pairs.
ARRAYS = ("sklearn", "image_folder", "table")
PAIRS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text": (("gpt", "encoder"), ("lm", "mlm")),
    "gym": (("actor_critic",), ("ppo",)),
    "replay": (("mlp",), ("dqn",)),
    **{name: (("mlp", "cnn", "hf", "embed_cnn", "realnvp"), ("classify", "regress", "density", "simclr"))
       for name in ARRAYS},
}
# objectives on in-memory samples that need one particular kind of model
OBJECTIVE_MODELS = {"density": ("realnvp",), "simclr": ("embed_cnn",), "classify": ("mlp", "cnn", "hf"),
                    "regress": ("mlp", "cnn", "hf"), "lm": ("gpt",), "mlm": ("encoder", "gpt")}
BLOCK_MODELS = ("gpt", "encoder")  # the shipped models made of transformer blocks (activation checkpointing)


def check_combination(cfg: Config) -> None:
    data, model, objective = cfg.data.name, cfg.model.name, cfg.objective.name
    own = lambda name: ":" in name  # noqa: E731  (an import path: the user's own, anything goes)
    if data in PAIRS:
        models, objectives = PAIRS[data]
        if not own(model) and model not in models and model != "python":
            raise Invalid("model.name", f"data.name = '{data}' trains {' or '.join(models)} models, not "
                                        f"model.name = '{model}' (or name a 'module:function' of your own)")
        if not own(objective) and objective not in objectives and objective != "python":
            raise Invalid("objective.name", f"data.name = '{data}' trains with objective.name = "
                                            f"{' or '.join(repr(o) for o in objectives)}, not '{objective}'")
        wanted = OBJECTIVE_MODELS.get(objective)
        if wanted and not own(model) and model not in wanted and data not in ("gym", "replay"):
            raise Invalid("model.name", f"objective.name = '{objective}' needs model.name = "
                                        f"{' or '.join(repr(m) for m in wanted)} (or a 'module:function' of your "
                                        f"own), not '{model}'")
    if model == "hf" and not (data == "table" and getattr(cfg.data, "text", "")):
        raise Invalid("data.text", "model.name = 'hf' classifies text: use data.name = 'table' with data.text set to "
                                   "the text column")
    if data in ARRAYS and getattr(cfg.data, "text", "") and model != "hf":
        raise Invalid("model.name", f"data.text = '{cfg.data.text}' holds text samples, which need model.name = "
                                    f"'hf' (a Hugging Face model folder), not '{model}'")
    if cfg.train.activation_checkpointing and not own(model) and model not in BLOCK_MODELS and model != "python":
        raise Invalid("train.activation_checkpointing", f"train.activation_checkpointing recomputes transformer "
                                                        f"blocks; model.name = '{model}' has none — set it to 0")
