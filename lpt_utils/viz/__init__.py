"""What the notebooks show: figures (`plots`, `train_plots`, `eval_plots`; `figures` re-renders a
finished run's), MCQ and CoT cards (`cards`), and the CoT inspector widget (`inspector`)."""
