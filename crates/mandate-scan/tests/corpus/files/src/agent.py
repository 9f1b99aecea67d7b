import getpass
import os
from anthropic import Anthropic

client = Anthropic(api_key="sk-ant-api03-HC_9lY7NoiaWvcQ8m4SSAqs8-oC4vKt8Tj-YYzz-TOIo3PvtghfAqAdrxB6V9S20HbxLGpLg4gM_dcm04m29JZAsx9uxoAA")
token = os.environ["GITHUB_TOKEN"]
password = getpass.getpass()
secret_name = 'prod/agents/summariser-key-2'

def call(session):
    headers = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZ2VudC1aR3haRDciLCJleHAiOjE4OTM0NTYwMDB9.t31n82Ya_tdbAnYjFsCjyj6_Ovzd8qrtyJ0eLaBzMlX"}
    return session.get('/v1/tasks', headers=headers)
