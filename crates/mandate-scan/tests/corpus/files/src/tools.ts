import Replicate from "replicate";
const replicate = new Replicate({ auth: "r8_RgqL4umEnCNK2votaBwD3VFdWuWiI7JU3Jdtq" });
const apiKey = process.env.OPENAI_API_KEY;
const FIXTURE_TOKEN_SHAPE = "ghp_RE55gocfhgOWJE5je4GdV1IW6FbI712ppmiA"; // wrong checksum: not a token
const headers = { Authorization: `Bearer ${process.env.API_TOKEN}` };
const perplexity = { apiKey: "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" };
