"""Defaults shared by every experiment; each config file overrides what it changes."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # "float32", "mixed_bfloat16" (CPUs with AMX, TPUs) or "mixed_float16" (GPUs).
    config.precision = "float32"
    # "default" (one device), "mirrored" (all local GPUs) or "multi_worker"
    # (MultiWorkerMirroredStrategy from TF_CONFIG; trains with a custom loop).
    config.strategy = "default"
    # TF op determinism: bitwise-reproducible runs (and resumes) on CPU, slower on
    # GPUs. Every random draw already derives from (seed, epoch, step).
    config.deterministic = False

    config.data = ml_collections.ConfigDict()
    config.data.name = "mnist5k"  # "mnist5k", "digits" or a tfds name
    config.data.data_dir = ml_collections.config_dict.placeholder(str)
    config.data.download = True
    config.data.augment = "none"  # "none", "crop" or "crop_flip"
    config.data.cache = True
    config.data.shuffle_buffer = 10_000
    config.data.limit_train = 0  # 0 = all; small values for smoke runs
    config.data.limit_test = 0
    # Images held out of the training split (stratified, fixed seed) to select the
    # kept model and to set the OOD gate's threshold; the published code holds out
    # 5,000 CIFAR images. 0 = none (no per-epoch validation, train.select "last").
    config.data.validation_size = 5000
    # Semi-supervised (JEM/HDGE's setting): > 0 keeps labels for this many training
    # images per class; CE and the contrastive terms see only those, the SGLD
    # log p(x) term (loss.px_sgld_weight) every training image.
    config.data.labels_per_class = 0
    # tf.data autotuning; off, for the reason in hdge_tf/data/autotune.py.
    config.data.autotune = False

    # Passed to hdge_tf.networks.build_backbone: `name` plus that network's arguments.
    config.backbone = ml_collections.ConfigDict()
    config.backbone.name = "wrn"
    config.backbone.depth = 28
    config.backbone.width = 10
    config.backbone.norm = "none"
    config.backbone.dropout = 0.0
    # "published" (JEM/HDGE's stride on a block's second conv) or "compact"
    # (stride on the first conv: fewer multiply-adds); see WideResNet.
    config.backbone.layout = "published"

    # Passed to hdge_tf.HDGEClassifier.
    config.loss = ml_collections.ConfigDict()
    config.loss.ce_weight = 1.0
    config.loss.pxy_contrast_weight = 1.0
    config.loss.px_contrast_weight = 0.0
    # "reference" (the published code's scoring) or "paper"; both measured in
    # docs/results.md.
    config.loss.formulation = "reference"
    config.loss.queue_size = 65_536
    config.loss.temperature = 0.1
    config.loss.queue_init = "random"  # or "data"
    config.loss.label_smoothing = 0.0
    config.loss.input_noise_std = 0.03
    # JEM's SGLD maximum-likelihood terms (0 = off) and their chains.
    config.loss.px_sgld_weight = 0.0
    config.loss.pxy_sgld_weight = 0.0
    config.loss.sgld_steps = 20
    config.loss.sgld_step_size = 1.0
    config.loss.sgld_noise_std = 0.01
    config.loss.replay_buffer_size = 10_000
    config.loss.reinit_freq = 0.05
    config.loss.energy_l2_weight = 0.0
    # > 0 learns a scale β of the generative energy, E(x) = -β·logsumexp f(x),
    # trained by the SGLD terms only, at this rate (β = exp(rate·θ)); 0 keeps
    # β = 1 as JEM and HDGE (docs/hdge_jem.md, "A learned energy scale").
    config.loss.energy_scale_rate = 0.0
    # Clip every SGLD step to the images' range [-1, 1] (the published code does
    # not; its chains drift outside what any image is).
    config.loss.sgld_clip = False
    # Chains per step (0 = one per batch image); HDGE's code: --sgld_batch_size.
    config.loss.sgld_batch_size = 0
    # Fresh chain starts: "uniform" noise (JEM) or "class_gaussian" (JEM++:
    # per-class Gaussians fitted to the training split), with this share of
    # uniform noise among them.
    config.loss.sgld_start = "uniform"
    config.loss.sgld_start_uniform_fraction = 0.1
    # The log p(x) term's chains sample p(x|y) for random labels (HDGE's code:
    # --class_cond_p_x_sample); the term stays on log p(x).
    config.loss.px_sgld_conditional_chains = False
    # The SGLD terms run on one training step in N, weighted N times (same
    # expected gradient, 1/N of their cost); 1 = every step, as JEM and HDGE.
    config.loss.sgld_every = 1
    # The SGLD terms' network passes with BatchNorm (SGLDSettings.pass_mode):
    # "auto" (samples never move the running statistics), "training" (JEM),
    # "inference", "sample_batch" or "data_batch".
    config.loss.sgld_pass_mode = "auto"
    # A step with a non-finite loss/gradient or |loss| above this is not applied and
    # the trainer restarts from the last good checkpoint (train.divergence_retries).
    config.loss.divergence_threshold = 1e8

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 200
    config.train.batch_size = 64
    # XLA-compiled training steps: "auto" (on with a GPU; off on CPU, where XLA was
    # measured slower than TF's oneDNN kernels), "true" or "false".
    config.train.jit_compile = "auto"
    config.train.optimizer = "adam"  # or "sgd"
    config.train.learning_rate = 1e-4
    config.train.momentum = 0.9  # sgd only
    config.train.weight_decay = 0.0
    # "l2" (default): PyTorch's coupled weight_decay, g += wd * w before the update,
    # as torch.optim.SGD/Adam in the published HDGE and JEM code (their paper
    # configs use wd 0 with Adam anyway). "decoupled": Keras's weight_decay.
    config.train.weight_decay_mode = "l2"
    config.train.adam_epsilon = 1e-8  # PyTorch's default (Keras's is 1e-7)
    config.train.warmup_steps = 1000
    # Warm start: a run directory or .keras file whose backbone and logit queue
    # initialize a new run (optimizer and replay buffer start fresh); "" = none.
    config.train.init_from = ""
    config.train.decay_epochs = (160, 180)
    config.train.decay_factor = 0.3
    config.train.keep_checkpoints = 2
    # Score the validation split (data.validation_size) after every epoch.
    config.train.validate = True
    # The model kept as model.keras: "best_val_accuracy" (the published code's
    # choice) or "last". metrics.json reports the test metrics of both.
    config.train.select = "best_val_accuracy"
    # mixed_float16 only: the dynamic loss scale's start (Keras's default 2**15).
    config.train.initial_loss_scale = 2.0**15
    # Restarts from the last good checkpoint after a diverged step before giving up;
    # each restart reseeds with seed + restart number unless retry_with_new_seed off.
    config.train.divergence_retries = 2
    config.train.retry_with_new_seed = True
    # Every N epochs write samples_epochNNN.png (SGLD samples) to the workdir; 0 = off.
    config.train.sample_every_epochs = 0

    # Read by the trainer (log p(x) AUROC per OOD set in metrics.json) and by
    # hdge-eval (hdge_tf.evaluation.report.run_evaluation: the full report).
    config.eval = ml_collections.ConfigDict()
    # OOD sets scored against the test split: "interp", "noise", "constant"
    # (synthetic, from the test images), "digits", "mnist5k" or any tfds name.
    config.eval.ood_sets = ()
    config.eval.batch_size = 256
    # In-distribution test images to evaluate (0 = all); each OOD set is capped at
    # the same number so AUPR's base rate stays at most 50%.
    config.eval.max_examples = 0
    # Gaussian noise added to every evaluated input, as in the published protocol:
    # the one protocol of hdge-eval, the trainer's metrics.json and per-epoch
    # validation. (PGD's attacked model has its own noisy copies, eval.pgd.)
    config.eval.input_noise_std = 0.03
    config.eval.ece_bins = 20  # equal-width, as in the JEM/HDGE code
    config.eval.scores = ("log_px", "max_softmax", "grad_norm", "contrast")
    # The OOD gate of hdge-export and the report: a log p(x) threshold that keeps
    # this fraction of the validation split (data.validation_size); 0 = none.
    config.eval.gate_tpr = 0.95
    config.eval.seed = 0
    # PGD (hdge_tf.evaluation.robustness); epsilons and steps in [-1, 1] input
    # units, i.e. twice their usual [0, 1]-scale values (8/255 there is 16/255 here).
    config.eval.pgd = ml_collections.ConfigDict()
    config.eval.pgd.norms = ("linf", "l2")
    config.eval.pgd.epsilons = ml_collections.ConfigDict()
    config.eval.pgd.epsilons.linf = (0.0, 4 / 255, 8 / 255, 16 / 255, 32 / 255)
    config.eval.pgd.epsilons.l2 = (0.0, 0.25, 0.5, 1.0, 2.0)
    config.eval.pgd.steps = 10
    config.eval.pgd.step_size = 0.25  # per step, as a fraction of epsilon
    config.eval.pgd.random_start = True
    config.eval.pgd.restarts = 1
    config.eval.pgd.num_examples = 200  # test images attacked; 0 skips the attack
    # The attacked model is JEM's defence (its attack_model.py, whose defaults these
    # follow): logits averaged over `noisy_copies` copies of each image, each copy
    # x + noise_std * N(0, I) refined by `sgld_refine_steps` SGLD steps on log p(x)
    # (x <- x + sgld_step_size * grad + sgld_noise_std * N(0, I)) before classifying.
    # noisy_copies = 1 with noise_std = 0 and 0 steps is the plain model.
    config.eval.pgd.noisy_copies = 5  # JEM's n_dup_chains
    config.eval.pgd.noise_std = 0.03  # JEM's sigma ([-1, 1] units; its L2 run used 0)
    config.eval.pgd.sgld_refine_steps = 0  # JEM's default; its README runs use 1
    config.eval.pgd.sgld_step_size = 1.0
    config.eval.pgd.sgld_noise_std = 0.01
    # The attack's gradient through the refinement: "bpda" (JEM's: the refinement is
    # the identity in the backward pass) or "unrolled" (through the SGLD chain).
    config.eval.pgd.gradient = "bpda"
    return config
