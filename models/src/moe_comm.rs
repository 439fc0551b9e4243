//! MoE dispatch and combine the way DeepEP does them, lowered to flows.
