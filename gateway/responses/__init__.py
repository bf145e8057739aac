"""The OpenAI Responses API (`/v1/responses`) translated to and from Chat Completions."""
