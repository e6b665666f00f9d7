"""The research experiments built on the library, each in its own room: the paired learning-speed experiment
(:mod:`.demo`, its verdict :mod:`.paired`, its dose-response :mod:`.dose`), the fine-tuning experiment
(:mod:`.demo_sft`), the job runner they share (:mod:`.runner`), their configs (:mod:`.config`), the demo
task's corpus (:mod:`.corpus`) and their figures (:mod:`.figures`). The library (config, data, train, sft,
eval, report and the modules under them) never imports this package; the CLI does."""
