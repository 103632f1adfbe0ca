"""What the packed expert-LoRA tests train on the tiny MoE: LoRA on attention beside the experts, at one rank."""

ATTENTION = ["q_proj", "v_proj"]
RANK = 4
