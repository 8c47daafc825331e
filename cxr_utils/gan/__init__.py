"""Training wing: the class-conditional GAN, how it is built for the machine, trained, checkpointed and judged.

From the ground up, each importing only those below (and ground, data/, metrics/): networks (G and D layers),
model (ConditionalGAN: the train step, EMA, NaN guard), generate (images from a generator); device (precision,
XLA, strategy, steps per execution, build_gan), checkpoints (files, lock, and the checkpoint key mapping incl. the
legacy format), run_folder (RunFolder: every file name of a run folder); probe (QualityProbe: scores a generator during training), tracker (quality.csv, the kept generator,
the rule and the alarm); runs (reading a run folder), curves (training figures); callback (RunCallback: the run
folder's side of each epoch); fit (the training loop); train_setup (assemble: recipe + overrides + data + run folder
-> a GANConfig and plan, for the CLI and notebook 02).
Nothing is imported here: `from cxr_utils.gan import fit` loads TensorFlow, `import cxr_utils.gan` does not.
"""
