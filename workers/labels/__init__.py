"""Labels and the text around them: question banks and prompts, teachers, the OpenAI-compatible client,
the LLM judge."""
