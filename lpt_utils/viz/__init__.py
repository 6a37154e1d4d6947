"""What the notebooks show: figures (`plots`, `train_plots`, `eval_plots`; `figures` re-renders a
finished run's), example cards of captions, MCQs and CoTs (`mcq_card`: one model, an HTML and a
matplotlib renderer), and the CoT inspector widget (`inspector`)."""
