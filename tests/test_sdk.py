"""Both official Alibaba Cloud SDKs drive a whole conversation against a real gateway.

- `aliyun-python-sdk-voicenavigator` on `aliyun-python-sdk-core`: RPC v1
  HMAC-SHA1, every parameter in the query of a POST.
- `alibabacloud-voicenavigator20180612`: ACS3-HMAC-SHA256 in the
  Authorization header, the action in `x-acs-action`.
Each run: begin, utterance, digits, silence up to the threshold and the final
action, end; and each SDK sees our errors as its own exception types.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import KEY_ID, SECRET, GatewayProcess, conversation_id


def test_core_sdk_drives_a_whole_conversation(gateway: GatewayProcess) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkvoicenavigator.request.v20180612 import (
        BeginDialogueRequest,
        CollectedNumberRequest,
        DialogueRequest,
        EndDialogueRequest,
        SilenceTimeoutRequest,
    )

    client = AcsClient(KEY_ID, SECRET, "cn-shanghai")

    def call(request: Any, **params: str) -> dict[str, Any]:
        request.set_endpoint(f"127.0.0.1:{gateway.port}")
        request.set_protocol_type("http")
        for name, value in params.items():
            getattr(request, f"set_{name}")(value)
        return json.loads(client.do_action_with_exception(request))  # type: ignore[no-any-return]

    ids = {"InstanceId": "demo", "ConversationId": conversation_id()}
    greeting = call(
        BeginDialogueRequest.BeginDialogueRequest(),
        CallingNumber="13800000000",
        CalledNumber="95555",
        InitialContext=json.dumps({"balance": "42", "name": "李四"}, ensure_ascii=False),
        **ids,
    )
    assert greeting["Action"] == "Broadcast" and greeting["RequestId"]

    answer = call(DialogueRequest.DialogueRequest(), Utterance="你好， 我想 查询余额！", **ids)
    assert answer["TextResponse"].startswith("李四您好，您的账户余额为42元")

    menu = call(CollectedNumberRequest.CollectedNumberRequest(), Number="2", **ids)
    assert menu["TextResponse"].startswith("银行卡业务") and menu["Interruptible"] is True

    replies = [call(SilenceTimeoutRequest.SilenceTimeoutRequest(), **ids) for _ in range(3)]
    assert [r["Action"] for r in replies] == ["Broadcast", "Broadcast", "HangUp"]
    assert replies[-1]["TextResponse"].startswith("抱歉，听不到您说话")

    end = call(EndDialogueRequest.EndDialogueRequest(), HangUpParams='{"Type":"Normal"}', **ids)
    assert set(end) == {"RequestId"}

    with pytest.raises(ServerException) as exc:
        call(DialogueRequest.DialogueRequest(), Utterance="还在吗", **ids)
    assert exc.value.get_error_code() == "InvalidConversationId.NotFound"
    assert exc.value.get_http_status() == 404
    assert exc.value.get_request_id()

    # A wrong secret: the SDK recognises our string to sign as its own.
    stranger = AcsClient(KEY_ID, "wrong-secret", "cn-shanghai")
    request = DialogueRequest.DialogueRequest()
    request.set_endpoint(f"127.0.0.1:{gateway.port}")
    request.set_protocol_type("http")
    request.set_InstanceId("demo")
    request.set_ConversationId("x")
    request.set_Utterance("hi")
    with pytest.raises(ServerException) as exc:
        stranger.do_action_with_exception(request)
    assert exc.value.get_error_code() == "InvalidAccessKeySecret"


def test_tea_sdk_drives_a_whole_conversation(gateway: GatewayProcess) -> None:
    from alibabacloud_tea_openapi.exceptions import ClientException
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_voicenavigator20180612 import models
    from alibabacloud_voicenavigator20180612.client import Client

    client = Client(
        Config(
            access_key_id=KEY_ID,
            access_key_secret=SECRET,
            endpoint=f"127.0.0.1:{gateway.port}",
            protocol="http",
        )
    )
    ids = {"instance_id": "demo", "conversation_id": conversation_id()}

    greeting = client.begin_dialogue(
        models.BeginDialogueRequest(
            calling_number="13800000000",
            called_number="95555",
            initial_context='{"balance": 7}',
            **ids,
        )
    ).body
    assert greeting.action == "Broadcast" and greeting.text_response.startswith("您好")

    answer = client.dialogue(models.DialogueRequest(utterance="check my balance", **ids)).body
    assert "Your balance is 7 yuan." in answer.text_response

    complaint = client.dialogue(models.DialogueRequest(utterance="我要 投诉", **ids)).body
    assert complaint.action == "TransferToAgent"
    assert json.loads(complaint.action_params) == {"skillGroupId": "complaints"}

    digits = client.collected_number(models.CollectedNumberRequest(number="9", **ids)).body
    assert digits.action == "Broadcast" and digits.interruptible is True  # unknown digit: reprompt

    actions = [
        client.silence_timeout(models.SilenceTimeoutRequest(**ids)).body.action for _ in range(3)
    ]
    assert actions == ["Broadcast", "Broadcast", "HangUp"]

    end = client.end_dialogue(models.EndDialogueRequest(hang_up_params="{}", **ids)).body
    assert end.request_id

    with pytest.raises(ClientException) as exc:
        client.silence_timeout(models.SilenceTimeoutRequest(**ids))
    assert exc.value.code == "InvalidConversationId.NotFound"
    assert exc.value.status_code == 404

    with pytest.raises(ClientException) as exc:
        client.begin_dialogue(
            models.BeginDialogueRequest(
                calling_number="1", instance_id="ghost", conversation_id="x"
            )
        )
    assert exc.value.code == "InvalidInstanceId.NotFound"
