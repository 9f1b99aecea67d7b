#!/usr/bin/env python3
"""Writes the labelled scanner corpus: files/ (an agent workspace) and
labels.json (file, line, rule of every credential that must be found).

Every credential here is generated from a fixed seed: random, right-shaped,
valid checksums where the format has one, and worthless. Run it again after
changing it; the output is deterministic:

    python3 crates/mandate-scan/tests/corpus/generate.py

`files/_gitignore` stands for `.gitignore` (a real one would hide its own
fixtures from this repository); the tests and bench/scan_peers.py copy the
tree and rename it.
"""

import base64
import json
import os
import random
import shutil
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "files")
R = random.Random(20261207)
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
BANNED = ("example", "xxxx", "here", "your", "dummy", "fake")


def rnd(n, alphabet=ALNUM):
    while True:
        s = "".join(R.choice(alphabet) for _ in range(n))
        # A digit in every value (random ones of this length have one), and
        # no word that reads as a placeholder by chance.
        if (n < 12 or any(c.isdigit() for c in s) or not any(c.isdigit() for c in alphabet)) and not any(
            b in s.lower() for b in BANNED
        ):
            return s


def b62_6(n):
    out = ""
    for _ in range(6):
        out = B62[n % 62] + out
        n //= 62
    return out


def github(prefix, valid=True):
    body = rnd(30)
    tail = b62_6(zlib.crc32(body.encode()))
    if not valid:
        tail = tail[:-1] + ("A" if tail[-1] != "A" else "B")
    return prefix + body + tail


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt():
    h = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    p = b64url(json.dumps({"sub": "agent-" + rnd(6), "exp": 1893456000}, separators=(",", ":")).encode())
    return f"{h}.{p}.{rnd(43, ALNUM + '-_')}"


def key_body(first, lines=25):
    raw = first + rnd(64 * lines - len(first), ALNUM + "+/")
    return [raw[i : i + 64] for i in range(0, len(raw), 64)]


AWS_ID = lambda: "AKIA" + rnd(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")  # noqa: E731
AWS_SECRET = lambda: rnd(40, ALNUM + "/+")  # noqa: E731

files = {}  # path -> list of (line, rule or None)
labels = []


def write(path, lines):
    """`lines`: strings, or (string, rule) for a line holding a credential;
    a list of strings inside counts as several lines, the first labelled."""
    files[path] = lines


# --- an agent workspace -----------------------------------------------------

write(".env", [
    "# local settings for the triage agent",
    (f"OPENAI_API_KEY=sk-proj-{rnd(74, ALNUM + '_-')}T3BlbkFJ{rnd(74, ALNUM + '_-')}", "openai-api-key"),
    (f"ANTHROPIC_API_KEY=sk-ant-api03-{rnd(93, ALNUM + '_-')}AA", "anthropic-api-key"),
    (f"GITHUB_TOKEN={github('ghp_')}", "github-pat"),
    (f"DATABASE_URL=postgres://triage:{rnd(18)}@db.prod.internal:5432/triage", "database-url-password"),
    "HF_TOKEN=<your-hf-token>",
    "LOG_LEVEL=debug",
    "SENTRY_ENVIRONMENT=staging",
])

write(".env.example", [
    "# copy to .env and fill in",
    "OPENAI_API_KEY=sk-...",
    "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "DATABASE_URL=postgres://user:password@localhost:5432/app",
    "API_KEY=changeme",
    "SECRET_KEY=your-secret-key-goes-in-this-place",
    "SLACK_BOT_TOKEN=xoxb-your-bot-token",
])

write(".env.staging", [
    (f"SLACK_WEBHOOK_URL=https://hooks.slack.com/services/T{rnd(10, '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ')}/B{rnd(10, '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ')}/{rnd(24)}", "slack-webhook"),
    (f"STRIPE_SECRET_KEY=sk_live_{rnd(99)}", "stripe-live-key"),
    (f"AWS_ACCESS_KEY_ID=ASIA{rnd(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')}", "aws-access-key-id"),
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET()}", "aws-secret-access-key"),
    "AWS_REGION=eu-west-1",
])

write("claude_desktop_config.json", [
    "{",
    '  "mcpServers": {',
    '    "github": {',
    '      "command": "npx",',
    '      "args": ["-y", "@modelcontextprotocol/server-github"],',
    '      "env": {',
    (f'        "GITHUB_PERSONAL_ACCESS_TOKEN": "{github("ghp_")}"', "github-pat"),
    "      }",
    "    },",
    '    "slack": {',
    '      "command": "npx",',
    '      "args": ["-y", "@modelcontextprotocol/server-slack"],',
    '      "env": {',
    (f'        "SLACK_BOT_TOKEN": "xoxb-{rnd(12, "0123456789")}-{rnd(13, "0123456789")}-{rnd(24)}",', "slack-bot-token"),
    '        "SLACK_TEAM_ID": "T01234567"',
    "      }",
    "    },",
    '    "brave-search": {',
    '      "command": "npx",',
    '      "env": {',
    (f'        "BRAVE_API_KEY": "BSA{rnd(28)}"', "generic-secret"),
    "      }",
    "    },",
    '    "postgres": {',
    '      "command": "npx",',
    (f'      "args": ["-y", "@modelcontextprotocol/server-postgres", "postgresql://reporting:{rnd(16)}@analytics.internal/warehouse"]', "database-url-password"),
    "    }",
    "  }",
    "}",
])

write(".cursor/mcp.json", [
    "{",
    '  "mcpServers": {',
    '    "gitlab": {',
    '      "command": "npx",',
    '      "args": ["-y", "@modelcontextprotocol/server-gitlab"],',
    '      "env": {',
    (f'        "GITLAB_PERSONAL_ACCESS_TOKEN": "glpat-{rnd(20, ALNUM + "_-")}",', "gitlab-pat"),
    '        "GITLAB_API_URL": "https://gitlab.com/api/v4"',
    "      }",
    "    },",
    '    "linear": {',
    '      "command": "npx",',
    '      "env": { "LINEAR_API_KEY": "${env:LINEAR_API_KEY}", "LINEAR_TOKEN": "${input:linear_token}" }',
    "    }",
    "  }",
    "}",
])

write(".github/workflows/deploy.yml", [
    "name: deploy",
    "on: [push]",
    "jobs:",
    "  deploy:",
    "    runs-on: ubuntu-latest",
    "    steps:",
    "      - uses: actions/checkout@b4ffde65f46336ab88eb53be808477a3936bae11",
    "      - uses: aws-actions/configure-aws-credentials@v4",
    "        with:",
    "          aws-access-key-id: ${{ secrets.AWS_ACCESS_KEY_ID }}",
    "          aws-secret-access-key: ${{ secrets.AWS_SECRET_ACCESS_KEY }}",
    "      - run: ./scripts/deploy.sh",
    "        env:",
    (f"          AWS_ACCESS_KEY_ID: {AWS_ID()}", "aws-access-key-id"),
    (f"          AWS_SECRET_ACCESS_KEY: {AWS_SECRET()}", "aws-secret-access-key"),
    "          DEPLOY_TOKEN: ${{ secrets.DEPLOY_TOKEN }}",
    "          GITHUB_TOKEN: ${{ github.token }}",
])

write("docker-compose.yml", [
    "services:",
    "  db:",
    "    image: postgres@sha256:4f0b2e8d9a1c3e5f7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e",
    "    environment:",
    "      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}",
    "  app:",
    "    build: .",
    "    environment:",
    "      DATABASE_URL: postgres://postgres:postgres@db:5432/dev",
    (f"      REDIS_URL: redis://:{rnd(20)}@cache:6379/0", "database-url-password"),
    "      SESSION_SECRET: ${SESSION_SECRET:?set it}",
])

write("Dockerfile", [
    "FROM python:3.12-slim",
    "ARG GITHUB_TOKEN",
    (f"ENV HF_TOKEN=hf_{rnd(34, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz')}", "huggingface-token"),
    "RUN pip install --no-cache-dir -r requirements.txt",
    'RUN echo "token is $GITHUB_TOKEN" > /dev/null',
    'CMD ["python", "-m", "agent"]',
])


def notebook(cells):
    """A .ipynb with each cell's source as JSON-escaped lines (one per file
    line, the way Jupyter writes them)."""
    out = ["{", ' "cells": [']
    for i, (kind, src, extra) in enumerate(cells):
        out += ["  {", f'   "cell_type": "{kind}",', f'   "id": "{R.getrandbits(32):08x}",',
                '   "metadata": {},']
        if kind == "code":
            out.append('   "execution_count": 3,')
            out += extra
        out.append('   "source": [')
        for j, line in enumerate(src):
            text, rule = line if isinstance(line, tuple) else (line, None)
            esc = json.dumps(text + ("\n" if j + 1 < len(src) else ""))
            entry = "    " + esc + ("," if j + 1 < len(src) else "")
            out.append((entry, rule) if rule else entry)
        out.append("   ]")
        out.append("  }" + ("," if i + 1 < len(cells) else ""))
    out += [" ],", ' "metadata": {"kernelspec": {"name": "python3"}},', ' "nbformat": 4,', ' "nbformat_minor": 5', "}"]
    return out


png_b64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(R.getrandbits(8) for _ in range(600))).decode()
write("notebooks/eval.ipynb", notebook([
    ("markdown", ["# Evaluate the summariser", "Set your key with `export OPENAI_API_KEY=<your-api-key>`."], []),
    ("code", [
        "import os",
        (f'os.environ["COHERE_API_KEY"] = "{rnd(40)}"', "model-provider-key"),
        (f'openai.api_key = "sk-proj-{rnd(70, ALNUM + "_-")}T3BlbkFJ{rnd(70, ALNUM + "_-")}"', "openai-api-key"),
        (f'client = Groq(api_key="gsk_{rnd(52)}")', "groq-api-key"),
        'token = os.environ["GITHUB_TOKEN"]',
    ], ['   "outputs": [{"output_type": "display_data", "data": {"image/png": "' + png_b64 + '"}, "metadata": {}}],']),
]))

write("config/settings.yaml", [
    "llm:",
    "  provider: mistral",
    (f"  mistral_api_key: {rnd(32)}", "model-provider-key"),
    "  max_tokens: 4096",
    "vector_store:",
    "  request_id: 123e4567-e89b-12d3-a456-426614174000",
    "  session_token: ${SESSION_TOKEN}",
    "  tokenizer_path: /models/tokenizer-v2.json",
])

write("config/agent.toml", [
    "[llm]",
    'model = "gemini-2.5-pro"',
    (f'api_key = "AIza{rnd(35, ALNUM + "_-")}"', "google-api-key"),
    "",
    "[vector]",
    'token = "<your-api-key>"',
    'password_file = "/run/secrets/vector_password"',
])

write("scripts/deploy.sh", [
    "#!/bin/sh",
    "set -eu",
    (f"export SLACK_USER_TOKEN=xoxp-{rnd(12, '0123456789')}-{rnd(12, '0123456789')}-{rnd(13, '0123456789')}-{rnd(32, '0123456789abcdef')}", "slack-user-token"),
    (f"export GITLAB_DEPLOY_TOKEN=gldt-{rnd(20, ALNUM + '_-')}", "gitlab-ci-token"),
    'curl -fsS -H "Authorization: Bearer $TOKEN" https://api.internal/deploy',
    "git checkout 3f786850e387550fdab836ed7e6dc881de23001b",
    'echo "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',
])

openssh = key_body("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW", 7)
write("keys/deploy_key", [
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    (openssh[0], "private-key"),
    *openssh[1:],
    "-----END OPENSSH PRIVATE KEY-----",
])

rsa = key_body("MIIEpAIBAAKCAQEA", 25)
cert = key_body("MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJRTES", 18)
write("keys/server.pem", [
    "-----BEGIN CERTIFICATE-----",
    *cert,
    "-----END CERTIFICATE-----",
    "-----BEGIN RSA PRIVATE KEY-----",
    (rsa[0], "private-key"),
    *rsa[1:],
    "-----END RSA PRIVATE KEY-----",
])

write("keys/id_ed25519.pub", [f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{rnd(43, ALNUM + '+/')} ops@laptop"])
write("keys/signing.pub", ["-----BEGIN PUBLIC KEY-----", *key_body("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA", 6), "-----END PUBLIC KEY-----"])
write("docs/private-keys.md", [
    "# Keys",
    "Put the deploy key in `keys/deploy_key`; it looks like this:",
    "",
    "    -----BEGIN OPENSSH PRIVATE KEY-----",
    "    ...",
    "    -----END OPENSSH PRIVATE KEY-----",
])

sa_key = "\\n".join(key_body("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ", 25))
write("gcp/service-account.json", [
    "{",
    '  "type": "service_account",',
    '  "project_id": "agents-prod-4411",',
    f'  "private_key_id": "{rnd(40, "0123456789abcdef")}",',
    (f'  "private_key": "-----BEGIN PRIVATE KEY-----\\n{sa_key}\\n-----END PRIVATE KEY-----\\n",', "gcp-service-account-key"),
    '  "client_email": "summariser@agents-prod-4411.iam.gserviceaccount.com",',
    f'  "client_id": "{rnd(21, "0123456789")}",',
    '  "token_uri": "https://oauth2.googleapis.com/token"',
    "}",
])

integ = lambda: "sha512-" + base64.b64encode(bytes(R.getrandbits(8) for _ in range(64))).decode()  # noqa: E731
write("package-lock.json", [
    "{",
    '  "name": "agent-tools",',
    '  "lockfileVersion": 3,',
    '  "packages": {',
    '    "node_modules/openai": {',
    '      "version": "4.77.0",',
    '      "resolved": "https://registry.npmjs.org/openai/-/openai-4.77.0.tgz",',
    f'      "integrity": "{integ()}"',
    "    },",
    '    "node_modules/tokenizers": {',
    '      "version": "0.13.3",',
    f'      "integrity": "{integ()}"',
    "    }",
    "  }",
    "}",
])

write("Cargo.lock", [
    "[[package]]",
    'name = "secret-service"',
    'version = "4.0.0"',
    'source = "registry+https://github.com/rust-lang/crates.io-index"',
    f'checksum = "{rnd(64, "0123456789abcdef")}"',
    "",
    "[[package]]",
    'name = "token-bucket"',
    'source = "git+https://github.com/acme/token-bucket?rev=9fceb02d0ae598e95dc970b74767f19372d61af8#9fceb02d0ae598e95dc970b74767f19372d61af8"',
])

write("src/agent.py", [
    "import getpass",
    "import os",
    "from anthropic import Anthropic",
    "",
    (f'client = Anthropic(api_key="sk-ant-api03-{rnd(93, ALNUM + "_-")}AA")', "anthropic-api-key"),
    'token = os.environ["GITHUB_TOKEN"]',
    "password = getpass.getpass()",
    "secret_name = 'prod/agents/summariser-key-2'",
    "",
    "def call(session):",
    (f'    headers = {{"Authorization": "Bearer {jwt()}"}}', "jwt"),
    "    return session.get('/v1/tasks', headers=headers)",
])

write("src/settings.py", [
    (f'SECRET_KEY = "{rnd(50, ALNUM + "!@#%^&*-_=+")}"', "generic-secret"),
    (f'DEEPSEEK_API_KEY = "sk-{rnd(32, "0123456789abcdef")}"', "model-provider-key"),
    (f'OPENROUTER_API_KEY = "sk-or-v1-{rnd(64, "0123456789abcdef")}"', "openrouter-api-key"),
    'API_TOKEN = settings.EXTERNAL_API_TOKEN_VALUE',
    'AUTH_TOKEN_HEADER = "X-Auth-Token-For-Agents"',
    "TOKEN_TTL_SECONDS = 3600",
    "PASSWORD_HASHERS = ['django.contrib.auth.hashers.Argon2PasswordHasher']",
])

write("src/tools.ts", [
    'import Replicate from "replicate";',
    (f'const replicate = new Replicate({{ auth: "r8_{rnd(37)}" }});', "replicate-api-token"),
    "const apiKey = process.env.OPENAI_API_KEY;",
    f'const FIXTURE_TOKEN_SHAPE = "{github("ghp_", valid=False)}"; // wrong checksum: not a token',
    "const headers = { Authorization: `Bearer ${process.env.API_TOKEN}` };",
    (f'const perplexity = {{ apiKey: "pplx-{rnd(48)}" }};', "perplexity-api-key"),
])

write("src/github_app.py", [
    (f'INSTALLATION_TOKEN = "{github("ghs_")}"', "github-app-token"),
    (f'oauth_token = "{github("gho_")}"', "github-oauth"),
    (f'user_to_server = "{github("ghu_")}"', "github-user-token"),
    (f'refresh = "{github("ghr_")}"', "github-refresh-token"),
    (f'FINE_GRAINED = "github_pat_{rnd(22)}_{rnd(59)}"', "github-fine-grained-pat"),
    f'BAD_CHECKSUM = "{github("ghs_", valid=False)}"',
])

write("src/mongo.js", [
    (f'const uri = "mongodb+srv://agent:{rnd(16)}@cluster0.ab1cd.mongodb.net/tasks?retryWrites=true";', "database-url-password"),
    "const mysqlUrl = `mysql://root:${process.env.MYSQL_ROOT_PASSWORD}@localhost/app`;",
    (f'const legacy = "mysql://reports:{rnd(14)}@10.0.4.12:3306/reports";', "database-url-password"),
])

write("k8s/secret.yaml", [
    "apiVersion: v1",
    "kind: Secret",
    "metadata:",
    "  name: summariser",
    "stringData:",
    (f"  password: {rnd(24)}", "generic-secret"),
    f"  ca.crt: {rnd(40, ALNUM + '+/')}",
])

write("infra/terraform.tfvars", [
    'region = "eu-west-1"',
    (f'db_password = "{rnd(20)}"', "generic-secret"),
    'kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"',
])

write(".npmrc", [
    "registry=https://registry.npmjs.org/",
    (f"//registry.npmjs.org/:_authToken=npm_{rnd(36)}", "generic-secret"),
])

write("README.md", [
    "# Summariser agent",
    "",
    "Set `OPENAI_API_KEY=<your-api-key>` and run `make`.",
    "For AWS use the documented pair: `AKIAIOSFODNN7EXAMPLE` / `wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`.",
    "A GitHub token looks like `ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`.",
    "Pinned to commit 7c3d1b2a9f8e6d5c4b3a29180f7e6d5c4b3a2918; release digest",
    "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae.",
    "Trace id 6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b.",
    "password: ********",
    "api_key: xxxxxxxxxxxxxxxxxxxxxxxx",
])

write("docs/logo.md", [
    "# Logo",
    f"![logo](data:image/png;base64,{png_b64})",
])

# Invalid UTF-8 around a credential: found all the same.
files["data/latin1.env"] = [
    "# caf\xe9 configuration (Latin-1)",
    (f"STRIPE_RESTRICTED=rk_live_{rnd(40)}", "stripe-live-key"),
    "NAME=\xe9t\xe9",
]

# Ignored by .gitignore, and binary: present, not reported.
write("_gitignore", ["secrets.local.env", "build/"])
write("secrets.local.env", [f"OPENAI_API_KEY=sk-proj-{rnd(80, ALNUM + '_-')}"])
write("build/bundle.js", [f'var k="{github("ghp_")}";'])


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for path, lines in files.items():
        full = os.path.join(OUT, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        text = []
        for n, line in enumerate(lines, 1):
            if isinstance(line, tuple):
                line, rule = line
                labels.append({"file": path, "line": n, "rule": rule})
            text.append(line)
        data = ("\n".join(text) + "\n").encode("latin-1" if path.endswith("latin1.env") else "utf-8")
        with open(full, "wb") as f:
            f.write(data)
    # A binary with a token inside: skipped as binary, never reported.
    os.makedirs(os.path.join(OUT, "assets"), exist_ok=True)
    with open(os.path.join(OUT, "assets", "logo.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + github("ghp_").encode() + bytes(200))
    with open(os.path.join(HERE, "labels.json"), "w") as f:
        json.dump(sorted(labels, key=lambda l: (l["file"], l["line"])), f, indent=1)
        f.write("\n")
    print(f"{len(files) + 1} files, {len(labels)} labelled credentials")


main()
