"""The experiment schema: the single source of defaults for every entry point.

Hydra (``python -m fedhyper``) and Flower (``flwr run .``) both resolve an
:class:`ExperimentConfig` through :func:`fedhyper.compose.compose_config`, so an
experiment is the same whichever way it is launched.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class DatasetSpec:
    """What a dataset is: the fields of a ``conf/dataset/<name>.yaml``.

    Any image-classification or character-level text dataset stored as Parquet
    (``<split>.parquet`` files, split ``train`` and ``test``) is described by these
    fields alone; :func:`fedhyper.data.spec.check_spec` says what each may hold.

    Attributes
    ----------
    name : str
        The dataset's name, in messages and cache file names.
    folder : str
        Folder of the Parquet files: relative to the data directory, or absolute;
        empty means ``name``.
    hub_name : str
        Hugging Face hub repository tried when the folder lacks a split; empty for none.
    hub_splits : list of str
        Splits the hub repository provides.
    hub_label_column : str
        The hub copy's name for the label column, where it differs; empty if it does not.
    modality : str
        ``image`` (encoded PNG or JPEG images) or ``text`` (equal-length strings whose
        label is the next character).
    input_column, label_column : str
        Columns holding the inputs and the labels.
    natural_id_column : str
        Column naming each row's natural client (writer, role); empty if there is none.
    num_classes : int
        Number of labels; for text, the vocabulary's length.
    input_shape : list of int
        One decoded input: ``[channels, height, width]`` (1 or 3 channels) or
        ``[sequence_length]``.
    mean, std : list of float
        Per-channel normalisation of images on the ``[0, 1]`` scale; empty for text.
    vocabulary : str
        Text only: the characters, in index order; characters outside it take the last
        index (LEAF's convention).

    """

    name: str = ""
    folder: str = ""
    hub_name: str = ""
    hub_splits: list[str] = field(default_factory=lambda: ["train", "test"])
    hub_label_column: str = ""
    modality: str = ""
    input_column: str = ""
    label_column: str = ""
    natural_id_column: str = ""
    num_classes: int = 0
    input_shape: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    vocabulary: str = ""

    def __hash__(self) -> int:
        # Loaders memoise per spec; a composed spec is never changed afterwards.
        return hash(tuple(tuple(v) if isinstance(v, list) else v for v in vars(self).values()))


@dataclass
class DatasetConfig(DatasetSpec):
    """Which data to train on (a :class:`DatasetSpec`), where it lives and how much of it.

    Attributes
    ----------
    data_dir : str or None
        Local Parquet mirror; ``None`` looks at ``$FEDHYPER_DATA_DIR`` then ``../shared/data``.
    cache_dir : str or None
        Where decoded tensors are cached; ``None`` uses ``$FEDHYPER_CACHE_DIR`` or
        ``~/.cache/fedhyper``.
    validation_fraction : float
        Share of each client's rows held out for its local validation split.
    test_examples : int
        Size of the centralised test set (a fixed random subset); 0 keeps all.

    """

    data_dir: str | None = None
    cache_dir: str | None = None
    validation_fraction: float = 0.1
    test_examples: int = 0

    def spec(self) -> DatasetSpec:
        """Return the dataset's description without this run's settings."""
        return DatasetSpec(**{f.name: getattr(self, f.name) for f in fields(DatasetSpec)})


@dataclass
class PartitionConfig:
    """How rows are split among clients (flwr-datasets partitioners).

    Attributes
    ----------
    kind : str
        ``iid``, ``dirichlet`` (over labels), ``pathological`` (k classes per client) or
        ``natural`` (writer or speaking role).
    num_clients : int
        Number of simulated clients (SuperNodes).
    alpha : float
        Dirichlet concentration; smaller is more skewed.
    classes_per_client : int
        Labels per client for ``pathological``.

    """

    kind: str = "dirichlet"
    num_clients: int = 100
    alpha: float = 0.5
    classes_per_client: int = 2


@dataclass
class ModelConfig:
    """Which network to train.

    Attributes
    ----------
    name : str
        ``auto`` (chosen from the dataset, :func:`fedhyper.models.choose_model`), ``cnn``,
        ``cifar_cnn``, ``resnet18_gn`` or ``char_lstm``.
    hidden_size : int
        LSTM width for ``char_lstm`` (LEAF uses 256).

    """

    name: str = "auto"
    hidden_size: int = 256


@dataclass
class ClientRuleConfig:
    """The client rule that moves the local learning rate during local training.

    A client rule registers a subclass with its own settings as the schema of its
    ``conf/client_rule/<name>.yaml`` (:mod:`fedhyper.client_rules`).

    Attributes
    ----------
    name : str
        The rule; ``constant`` keeps the LR the server sent.

    """

    name: str = "constant"

    def keeps_node_state(self) -> bool:
        """Whether the rule carries state on each client from one round to the next."""
        return False


@dataclass
class ClientConfig:
    """Local training on each client.

    Attributes
    ----------
    optimizer : str
        ``sgd`` or ``adam``.
    lr : float
        Initial local learning rate η_0.
    momentum : float
        SGD momentum (ignored by Adam).
    weight_decay : float
        L2 penalty of the local optimiser.
    local_epochs : int
        Passes over the client's data per round.
    batch_size : int
        Mini-batch size.
    max_steps : int
        Cap on local steps per round; 0 means no cap.
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    flush_denormals : bool
        Treat subnormal floats as zero on the CPU (x86 FTZ/DAZ), in the clients' training
        and the server's evaluation: a trained LSTM's gradients through 80 time steps
        fall into that range, where each operation costs many times a normal one (a
        step of the Shakespeare LSTM after 30 rounds took 3.4-12.5x as long with them;
        docs/performance.md). The values flushed are below 1.2e-38; ``false`` keeps
        IEEE's gradual underflow.
    rule : ClientRuleConfig
        The client rule (``client_rule=<name>`` chooses it) and its settings.

    """

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.5
    weight_decay: float = 0.0
    local_epochs: int = 1
    batch_size: int = 64
    max_steps: int = 0
    device: str = "auto"
    flush_denormals: bool = True
    rule: ClientRuleConfig = field(default_factory=ClientRuleConfig)


@dataclass
class StrategyConfig:
    """The settings every method shares; each method's own extend it.

    A method registers a subclass of this dataclass as the schema of its
    ``conf/strategy/<name>.yaml`` (:mod:`fedhyper.methods`); Hydra types the
    ``strategy`` node with the subclass the chosen method registered.

    Attributes
    ----------
    name : str
        The method; see :func:`fedhyper.methods.method_names`.
    clients_per_round : int
        Clients sampled for training each round.
    evaluate_clients_per_round : int
        Clients sampled for federated evaluation each round; 0 disables it.
    weighted : bool
        Weight the aggregate by ``num-examples`` (Flower) rather than the plain mean
        (the reference code).
    global_lr : float
        Initial global learning rate α_0, the axis the robustness suite sweeps for every
        arm: FedHyper-G's initial α, FedHyper-GM's initial accumulator
        (:func:`fedhyper.rules.accumulator_for_global_lr`), Decay-G's α_0; methods without
        a global learning rate leave it unread (``conf/arm/fedavg.yaml`` passes it to
        FedAvgM's ``server_lr``).

    """

    name: str = "fedavg"
    clients_per_round: int = 10
    evaluate_clients_per_round: int = 10
    weighted: bool = True
    global_lr: float = 1.0


@dataclass
class SimulationConfig:
    """How the Flower simulation engine runs clients.

    Attributes
    ----------
    backend : str
        Flower simulation backend (``ray``).
    num_cpus_per_client : float
        Ray resources of one ClientApp; concurrency = CPUs / this value.
    num_gpus_per_client : float
        Fraction of a GPU per ClientApp (0.25 puts four clients on one GPU).
    round_timeout_s : float
        Seconds the server waits for the replies of one round.
    poll_interval_s : float
        Seconds between the server's checks for replies while it waits for them.
    node_wait_s : float
        Seconds the server waits at start for the SuperNodes to connect.
    num_supernodes : int
        Simulated SuperNodes the clients are multiplexed over (``python -m fedhyper``);
        0 means one per ClientApp the machine runs at once. Results do not depend on it.

    """

    backend: str = "ray"
    num_cpus_per_client: float = 1.0
    num_gpus_per_client: float = 0.0
    round_timeout_s: float = 3600.0
    poll_interval_s: float = 0.1
    node_wait_s: float = 60.0
    num_supernodes: int = 0


@dataclass
class LoggingConfig:
    """Outputs, experiment tracking and the terminal display.

    Attributes
    ----------
    output_dir : str or None
        Run directory; ``None`` uses Hydra's job directory, or
        ``outputs/<date>/<time>-<strategy>`` under the working directory for ``flwr run``.
    wandb : bool
        Log to Weights & Biases (offline unless ``WANDB_API_KEY`` is set).
    wandb_project : str
        W&B project name.
    progress : bool
        Show the live round display on the terminal.

    """

    output_dir: str | None = None
    wandb: bool = False
    wandb_project: str = "fedhyper"
    progress: bool = True


@dataclass
class ReliabilityConfig:
    """Checkpoints, and what the server accepts from the clients of a round.

    Attributes
    ----------
    checkpoint_every : int
        Write ``checkpoint.pt`` into the run directory every this many rounds (and after
        the last); 0 writes none. A checkpoint costs one model copy plus the strategy's
        state, far less than a round.
    min_reply_fraction : float
        Share of the sampled clients whose updates must arrive and pass the checks for
        the round to aggregate; at least one is always required.
    round_retries : int
        Times a round that got too few usable replies is run again, with freshly sampled
        clients, before the run stops.
    max_update_norm_ratio : float
        Reject an update whose norm exceeds this multiple of the smaller of the global
        model's norm and the round's lower-median update norm (honest updates differ by
        about the ratio of their local step counts); 0 turns the check off.

    """

    checkpoint_every: int = 1
    min_reply_fraction: float = 0.5
    round_retries: int = 2
    max_update_norm_ratio: float = 100.0


@dataclass
class FaultConfig:
    """Faults injected into the clients' training replies, for testing robustness.

    Each sampled client draws one fault per round and attempt, from a generator seeded
    by the experiment's seed, its partition, the round and the attempt, so a run's faults
    are reproducible. The probabilities are exclusive and must sum to at most 1.

    Attributes
    ----------
    crash_probability : float
        The ClientApp raises instead of replying.
    delay_probability : float
        The client replies one second after the round timeout
        (``simulation.round_timeout_s``), i.e. too late.
    poison_probability : float
        The client replies with a corrupted model (see ``poison``).
    poison : str
        How a poisoned reply is corrupted: ``nan`` or ``inf`` (every trainable value),
        ``scale`` (weights times ``poison_scale``), ``shape`` (one array loses its last
        row) or ``dtype`` (float arrays sent as float64).
    poison_scale : float
        Factor of the ``scale`` poison.

    """

    crash_probability: float = 0.0
    delay_probability: float = 0.0
    poison_probability: float = 0.0
    poison: str = "nan"
    poison_scale: float = 1e3


@dataclass
class ExperimentConfig:
    """One federated experiment.

    Attributes
    ----------
    num_rounds : int
        Federated rounds.
    seed : int
        Seed of partitioning, sampling, model initialisation and local shuffling.
    target_accuracy : float
        Centralised accuracy used to report rounds-to-target.
    resume : str or None
        A previous run's directory: continue it from its last checkpoint, with the
        configuration saved there (only ``num_rounds``, ``logging``, ``simulation`` and
        ``reliability`` settings may be changed).

    """

    num_rounds: int = 20
    seed: int = 0
    target_accuracy: float = 0.7
    resume: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    reliability: ReliabilityConfig = field(default_factory=ReliabilityConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
