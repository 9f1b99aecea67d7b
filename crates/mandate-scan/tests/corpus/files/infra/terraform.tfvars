region = "eu-west-1"
db_password = "yHzSuydw729OYS9d7uuP"
kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
