"""Fixed corpora for the secret scanner: real-looking secrets of every supported format (each with the exact
value that must be found) and ordinary memory text that must stay quiet.

Values are made up and built from parts ("sk_" + "live_..."), so no scanner mistakes this file for a leak.
"""

from __future__ import annotations

HEX32 = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
HEX64 = HEX32 + "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
B64 = "Zk9xQ2Vm3LpT7wYbN4rJ8sKd1HgA6uEcQm5Rt2Wy"  # 40 random-looking base64 characters
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
GITHUB = "ghp_" + "A1b2C3d4E5f6" * 3
JWT = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
AGE = "1" + "QYQSZQGPQ" * 6 + "QYQS"  # "1" + 58 bech32 characters
PEM = (
    "-----BEGIN OPENSSH "
    + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBzb21lLWZha2Uta2V5LWJ5dGVzLWZvci10ZXN0aW5nLW9ubHkAAAA=\n-----END OPENSSH "
    + "PRIVATE KEY-----"
)

# (kind, text, the exact value found and redacted)
SECRETS: list[tuple[str, str, str]] = [
    ("private_key", f"my key:\n{PEM}\nthat's it", PEM),
    ("private_key", "age: AGE-SECRET-KEY-" + AGE + " end", "AGE-SECRET-KEY-" + AGE),
    ("aws_access_key", f"export AWS_ACCESS_KEY_ID={AWS_KEY}\n", AWS_KEY),
    ("aws_access_key", "key ASIA" + "Y34FZKBOKMUTVV7A in the log", "ASIAY34FZKBOKMUTVV7A"),
    (
        "aws_secret_key",
        "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "aws_secret_key",
        '"SecretAccessKey": "' + 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("github_token", f"git clone https://{GITHUB}@github.com/o/r", GITHUB),
    (
        "github_token",
        "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a ok",
        "gho_16C7e42F292c6912E7710c838347Ae178B4a",
    ),
    (
        "github_token",
        "pat github_pat_" + "11ABCDEFG0aBcDeFgHiJkLm_NoPqRsTuVwXyZ0123456789abcdefGHIJKLMNOPQRSTU.",
        "github_pat_11ABCDEFG0aBcDeFgHiJkLm_NoPqRsTuVwXyZ0123456789abcdefGHIJKLMNOPQRSTU",
    ),
    ("gitlab_token", "GITLAB glpat-" + "xxYY12zz34AAbb56ccdd", "glpat-xxYY12zz34AAbb56ccdd"),
    ("gitlab_token", "runner token glrt-" + "t3_Ab12Cd34Ef56Gh78Ij90", "glrt-t3_Ab12Cd34Ef56Gh78Ij90"),
    (
        "anthropic_key",
        "ANTHROPIC_API_KEY=sk-ant-" + "api03-AbC_dEf-123456789012345678901234567890xyzAA",
        "sk-ant-api03-AbC_dEf-123456789012345678901234567890xyzAA",
    ),
    (
        "openai_key",
        "use sk-proj-" + "Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj then",
        "sk-proj-Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj",
    ),
    (
        "openai_key",
        "key: sk-" + "aB3dE4fG5hI6jK7lM8nO9pQ0rS1tU2vW3xY4zA5bC6dE7f",
        "sk-aB3dE4fG5hI6jK7lM8nO9pQ0rS1tU2vW3xY4zA5bC6dE7f",
    ),
    (
        "slack_token",
        "SLACK xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    ),
    (
        "slack_token",
        "app token xapp-" + "1-A0123BCDEFG-1234567890123-abcdef0123",
        "xapp-1-A0123BCDEFG-1234567890123-abcdef0123",
    ),
    (
        "slack_webhook",
        "post to https://hooks.slack.com/" + "services/T0123ABCD/B0456EFGH/Xk9pQ2mZa7Lr4Tb8Wc1Ye3Uv",
        "hooks.slack.com/services/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",
    ),
    (
        "discord_webhook",
        "curl https://discord.com/api/"
        + "webhooks/123456789012345678/AbCdEf-GhIjKl_MnOpQrStUvWxYz0123456789abcdefGHIJKLmnopQRSTuv",
        "discord.com/api/webhooks/123456789012345678/AbCdEf-GhIjKl_MnOpQrStUvWxYz0123456789abcdefGHIJKLmnopQRSTuv",
    ),
    (
        "teams_webhook",
        "https://contoso.webhook.office.com/"
        + "webhookb2/1a2b3c4d-0000-4a4a-8b8b-1234567890ab@9f8e/IncomingWebhook/abc123",
        ".webhook.office.com/webhookb2/1a2b3c4d-0000-4a4a-8b8b-1234567890ab@9f8e/IncomingWebhook/abc123",
    ),
    ("stripe_key", "stripe sk_" + "live_4eC39HqLyjWDarjtT1zdp7dc.", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("stripe_key", "rk_" + "live_51H8bAbCdEfGhIjKlMnOpQr", "rk_live_51H8bAbCdEfGhIjKlMnOpQr"),
    (
        "stripe_key",
        "endpoint whsec_" + "Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj2k",
        "whsec_Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj2k",
    ),
    (
        "twilio_key",
        "twilio SK" + "0123456789abcdef0123456789ABCDEF here",
        "SK0123456789abcdef0123456789ABCDEF",
    ),
    (
        "sendgrid_key",
        "SENDGRID SG." + "AbCdEfGhIjKlMnOpQrStUv.wXyZ0123456789-AbCdEfGhIjKlMnOpQrStUvWxYz01",
        "SG.AbCdEfGhIjKlMnOpQrStUv.wXyZ0123456789-AbCdEfGhIjKlMnOpQrStUvWxYz01",
    ),
    (
        "google_api_key",
        "maps AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY!",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    ),
    (
        "google_oauth",
        "client_id=x GOCSPX-" + "Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6",
        "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",
    ),
    (
        "google_oauth",
        "token ya29." + "a0AfH6SMBx3kQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0",
        "ya29.a0AfH6SMBx3kQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0",
    ),
    (
        "npm_token",
        "//registry.npmjs.org/:_authToken=npm_" + "aB3dE4fG5hI6jK7lM8nO9pQ0rS1tU2vW3xY4",
        "npm_aB3dE4fG5hI6jK7lM8nO9pQ0rS1tU2vW3xY4",
    ),
    (
        "pypi_token",
        "TWINE_PASSWORD=pypi-" + "AgEIcHlwaS5vcmcCJGI4YmNhMDA0LTc2ZjAtNDQ0OS04ZTk4LWFhYjQ3NzdhZDI0MQAC",
        "pypi-AgEIcHlwaS5vcmcCJGI4YmNhMDA0LTc2ZjAtNDQ0OS04ZTk4LWFhYjQ3NzdhZDI0MQAC",
    ),
    (
        "huggingface_token",
        "HF hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh ok",
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
    ),
    (
        "azure_key",
        "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=" + B64 + B64 + "Ab3xQ9==;",
        "AccountKey=" + B64 + B64 + "Ab3xQ9==",
    ),
    (
        "azure_key",
        "client secret Ab1" + "8Q~Xk9pQ2mZa7Lr4Tb8Wc1Ye3Uv-Ab3xQ9zL",
        "Ab18Q~Xk9pQ2mZa7Lr4Tb8Wc1Ye3Uv-Ab3xQ9zL",
    ),
    (
        "azure_key",
        "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig="
        + "Xk9pQ2mZa7Lr4Tb8Wc1Ye3Uv%2BAb3xQ9zLm2Np7Rt4Vw%3D",
        "Xk9pQ2mZa7Lr4Tb8Wc1Ye3Uv%2BAb3xQ9zLm2Np7Rt4Vw%3D",
    ),
    ("digitalocean_token", "DO dop_v1_" + HEX64, "dop_v1_" + HEX64),
    (
        "heroku_key",
        "HRKU-" + "AAbC3dEf4GhI5jKl6MnO7pQr8StU9vWx0YzA1bC2dE3fG4hI5jK6lM7nO8pQ9",
        "HRKU-AAbC3dEf4GhI5jKl6MnO7pQr8StU9vWx0YzA1bC2dE3fG4hI5jK6lM7nO8pQ9",
    ),
    ("api_token", "shopify shpat_" + HEX32, "shpat_" + HEX32),
    (
        "api_token",
        "LINEAR lin_api_" + "Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj2kL4mN6",
        "lin_api_Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj2kL4mN6",
    ),
    ("api_token", "databricks dapi" + HEX32, "dapi" + HEX32),
    (
        "api_token",
        "bot 123456789:AA" + "Hk9pQ2mZa7Lr4Tb8Wc1Ye3UvAb3xQ9zLm",
        "123456789:AAHk9pQ2mZa7Lr4Tb8Wc1Ye3UvAb3xQ9zLm",
    ),
    (
        "api_token",
        "groq gsk_" + "Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj2kL4mN6pQ8rS0tU2v",
        "gsk_Ab3xQ9zLm2Np7Rt4Vw8Yz1Bc5De6Fg0Hj2kL4mN6pQ8rS0tU2v",
    ),
    ("jwt", "Authorization: Bearer " + JWT, JWT),
    ("url_password", "DATABASE_URL=postgres://app:" + "s3cr3t-Pa55@db.internal:5432/app", "s3cr3t-Pa55"),
    ("url_password", "git remote add o https://bob:" + "hunter2@example.com/x.git", "hunter2"),
    ("url_password", "REDIS_URL=redis://:" + "Xk9pQ2mZa7@cache.local:6379/0", "Xk9pQ2mZa7"),
    ("url_password", "amqp://guest:" + "Gu3stP4ss@rabbit:5672/", "Gu3stP4ss"),
    ("cli_password", "$ curl -u admin:" + "S3cr3tP4ss https://api.local/x", "S3cr3tP4ss"),
    ("cli_password", "curl --user deploy:" + "Tr0ub4dor-3 -X POST https://h/x", "Tr0ub4dor-3"),
    ("cli_password", "mysql -h db -u root -p" + "DbP4ssw0rd9 app < dump.sql", "DbP4ssw0rd9"),
    ("cli_password", "mysqldump -uroot -p'" + "My$ecretPw1' app > x.sql", "My$ecretPw1"),
    ("cli_password", "sshpass -p '" + "r00tPassw0rd' ssh root@host", "r00tPassw0rd"),
    ("cli_password", "docker login --password " + "Dh7kP2qXz9 registry.local", "Dh7kP2qXz9"),
    ("auth_header", "-H 'Authorization: Bearer " + HEX32 + "'", HEX32),
    ("auth_header", "Authorization: Basic " + "YWRtaW46UzNjcjN0UDRzcw==", "YWRtaW46UzNjcjN0UDRzcw=="),
    ("auth_header", '"authorization": "token ' + "Xk9pQ2mZa7Lr4Tb8Wc1Y" + '"', "Xk9pQ2mZa7Lr4Tb8Wc1Y"),
    ("password", 'password = "' + 'hunter2xyz"', "hunter2xyz"),
    ("password", "DB_PASSWORD='" + "correct-horse-7'", "correct-horse-7"),
    ("password", '{"user": "bob", "password": "' + 'hunter2xyz"}', "hunter2xyz"),
    ("password", "API_KEY=" + "abcd1234efgh5678", "abcd1234efgh5678"),
    ("password", "  client_secret: " + "9f8e7d6c5b4aQQ\n", "9f8e7d6c5b4aQQ"),
    ("password", "apiKey: '" + "Zx9-Yw8-Vu7'", "Zx9-Yw8-Vu7"),
    ("password", "SECRET_KEY=" + "django-insecure-7x!k2m9q", "django-insecure-7x!k2m9q"),
    ("password", "JWT_SECRET_KEY=" + "Jw7SecretValue42", "Jw7SecretValue42"),
    ("password", "WEBHOOK_SECRET_TOKEN=" + "wh5ecr3tT0ken", "wh5ecr3tT0ken"),
    ("password", "GITHUB_TOKEN=" + "ghs4ort3dT0ken99", "ghs4ort3dT0ken99"),
    ("password", "SMTP_PASSWORD: " + "M4ilP4ss2024", "M4ilP4ss2024"),
    ("password", "OPENWEATHER_API_KEY=" + HEX32, HEX32),
    ("password", "x-api-key: " + "a1b2c3d4e5f60718", "a1b2c3d4e5f60718"),
    (
        "password",
        "HEROKU_API_KEY=" + "2c4a6e8b-1d3f-4a5c-9e7b-0f2d4c6a8e1b",
        "2c4a6e8b-1d3f-4a5c-9e7b-0f2d4c6a8e1b",
    ),
    ("stated_password", "ok so the password is " + "hunter2x! then log in", "hunter2x!"),
    ("stated_password", "The password for the staging db is " + "Tr0ub4dor&3.", "Tr0ub4dor&3"),
    ("stated_password", "my API key is " + HEX32 + " keep it", HEX32),
    ("stated_password", "Le mot de passe : " + "Sol3il-2024 pour le wifi", "Sol3il-2024"),
    ("stated_password", "le mot de passe du serveur est " + "Azerty123!", "Azerty123!"),
    ("stated_password", "サーバーのパスワードは " + "hunter2x です", "hunter2x"),
    ("stated_password", "パスワード：" + "Passw0rd!23", "Passw0rd!23"),
    ("high_entropy", "blob " + B64[:32] + " here", B64[:32]),
]

# Ordinary memory text that must not be flagged: prose in three languages, code that reads secrets from
# somewhere else, placeholders, digests, ids, paths, URLs and logs.
QUIET: list[str] = [
    "commit 3f786850e387550fdab836ed7e6dc881de23001b\nAuthor: Dev <dev@example.com>",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b4b0b822cd15d6c15b0f00a08  rlm_vault-0.1.0.tar.gz",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b4b0b822cd15d6c15b0f00a08",
    "---\nid: 2026-11-24_MyApp_001\nsha256: 9f2c4b1a8e7d6c5b4a39281706f5e4d3c2b1a09f2c4b1a8e7d6c5b4a3928170\ntokens: 812\n---",
    "integrity sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUR1C7LVUnG1pj3xZ4w==",
    "session 123e4567-e89b-12d3-a456-426614174000 and req_011CV1abcd",
    "/home/dev/.claude/projects/-home-dev-proj/c561b41d-67d1-4922-97f3-675725391c96.jsonl",
    "src/rlm_vault/mcp_server/ThisIsAVeryLongCamelCaseIdentifierName1/x.py",
    "def test_parse_transcript_handles_huge_lines_gracefully_and_quickly(): pass",
    "N23_ossl_old_des_ks_struct4DOLLAR_10E Content-Security-Policy-Report-Only-2024",
    "The token: see below. password: required. Set the API key in your config file.",
    "token = self.token\npassword = getpass()\nsecret = os.environ['SECRET']\nmax_tokens=128000",
    "password = os.environ['DB_PASSWORD']\ntoken = get_token()\napi_key = settings.API_KEY\nkey = cache_key(x)",
    "SECRET_KEY = env('SECRET_KEY')\nJWT_SECRET_KEY=${JWT_SECRET_KEY}\nAPI_TOKEN=$(cat ~/.token)",
    "API_KEY=${API_KEY}\ntoken: ${{ secrets.GITHUB_TOKEN }}\npassword: <your-password>\napi_key = 'YOUR_API_KEY'",
    'password = "********"\nsecret: xxxxxxxxxx\ntoken: "changeme"\n"password": "string"',
    "OPENAI_API_KEY=<your-key>\nSTRIPE_KEY=sk_test_xxx\nDB_PASSWORD=changeme\nAUTH=xxx",
    "tokens: 812\ntoken_count = 4096\npassword_min_length = 12\ntoken: v1.2.3",
    "PWD=/work/main OLDPWD=/home/dev",
    "bypass = 'route66x'\ncompass: N30E12\nsecretary = 'Ann'\nmonkey: banana42x",
    "https://github.com/anthropics/claude-code/issues/12345 and https://user@example.com/x",
    "Use ANTHROPIC_API_KEY=dummy in tests; ghp_ is the GitHub prefix; sk- starts OpenAI keys.",
    "| id | summary |\n|----|---------|\n| 2026-11-24_MyApp_001 | API v2 architecture decisions |",
    "-" * 80 + "\n" + "=" * 80,
    "日本語のテキストとパスワードについての説明。Le mot de passe : voir ci-dessous.",
    "The password is required and must be at least 12 characters; the token is refreshed hourly.",
    "Le mot de passe est trop court. La clé API est dans le coffre. Le jeton expire demain.",
    "パスワードは変更しました。APIキーは環境変数から読み込みます。トークンは一時間で失効します。",
    "git push -u origin main\nmkdir -p build/out\ndocker run -u 1000:1000 img\nps -p 1234",
    "Authorization: Bearer $TOKEN\nAuthorization: Bearer <token>\nThe Authorization header is required.",
    'curl -u "$USER:$PASS" https://x\nmysql -p app\nsshpass -p "$SSH_PASS" ssh host',
    "Bearer tokens are short-lived; use the refresh endpoint.",
    "uuid 550e8400-e29b-41d4-a716-446655440000 created 2026-11-24T15:30:00Z",
    "version 2.31.0-rc1, python 3.11.9, node v20.11.1",
    "the key is to keep functions small; the secret is caching: it makes x86_64 builds fast",
    "dedup key: sha256 of the body; the cache key = (id, mtime)",
    "2026-11-24 12:00:01 INFO request_id=8c7b6a5f4e3d2c1b0a99 status=200 latency_ms=41",
    "connect to postgres://localhost:5432/app as user app (password from PGPASSFILE)",
    "see https://docs.python.org/3/library/secrets.html#secrets.token_urlsafe",
    "$ pip install -e '.[dev]'\n$ pytest -q -x tests/test_secrets.py\n1 passed in 0.2s",
]
