"""Server Post against the simulator subprocess: approvals, duplicates, follow-ons, batches, formats."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.integration.epx_sim.client import ACH, KEY, VISA, form, get_json, next_tran_nbr, post
from tests.support.sim import SimControl, SimProcess

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_sale_duplicate_and_ledger(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    tn = next_tran_nbr()
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    status, first = await post(
        http, epx_sim.server_post_url, form("CCE1", "10.00", tn, **VISA), headers={"traceparent": trace}
    )
    assert status == 200 and first["AUTH_RESP"] == "00" and first["TRAN_NBR"] == str(tn)
    status, again = await post(http, epx_sim.server_post_url, form("CCE1", "10.00", tn, **VISA))
    assert again["AUTH_RESP"] == "94" and "Duplicate TRAN_NBR" in again["AUTH_RESP_TEXT"]

    entries = await sim_control.ledger(tran_nbr=tn)
    assert [(e["processed"], e["duplicate"]) for e in entries] == [(True, False), (False, True)]
    assert entries[0]["traceparent"] == trace and entries[0]["auth_guid"] == first["AUTH_GUID"]
    assert entries[0]["masked_account"] == "************1111"
    assert "4111111111111111" not in str(entries)

    report = await get_json(
        http, epx_sim.reporting_url + "/reporting/transactions", merchant="900300", tranNbr=tn
    )
    [row] = report["data"]["transactions"]
    assert report["status"] == "success"
    assert row["tranNbr"] == tn and row["authGuid"] == first["AUTH_GUID"] and row["amount"] == "10.00"
    assert row["tranType"] == "CCE1" and row["authResp"] == "00" and row["batchId"] == "20260302"
    none = await get_json(
        http, epx_sim.reporting_url + "/reporting/transactions", merchant="900300", tranNbr=next_tran_nbr()
    )
    assert none["data"]["transactions"] == []


async def test_unknown_merchant_is_401_and_validation_texts(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    status, _ = await post(http, epx_sim.server_post_url, form("CCE1", "1.00", **{**VISA, "MERCH_NBR": "1"}))
    assert status == 401
    _, out = await post(http, epx_sim.server_post_url, form("CCE1", "1.0", **VISA))
    assert out["AUTH_RESP"] == "12" and out["AUTH_RESP_TEXT"] == "Invalid AMOUNT format"
    _, out = await post(http, epx_sim.server_post_url, form("CCE1", "1.00", **VISA, BATCH_ID="123456789"))
    assert out["AUTH_RESP_TEXT"] == "Invalid BATCH_ID[LEN]"
    _, out = await post(http, epx_sim.server_post_url, form("CCE5", "1.00", **VISA))
    assert out["AUTH_RESP_TEXT"] == "Invalid TRAN_TYPE"


async def test_capture_refund_void_and_batch_close(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    url = epx_sim.server_post_url
    _, a = await post(http, url, form("CCE2", "20.00", **VISA))
    _, c1 = await post(http, url, form("CCE4", "5.00", ORIG_AUTH_GUID=a["AUTH_GUID"]))
    _, c2 = await post(http, url, form("CCE4", "15.00", ORIG_AUTH_GUID=a["AUTH_GUID"]))
    assert c1["AUTH_RESP"] == c2["AUTH_RESP"] == "00"
    _, over = await post(http, url, form("CCE4", "0.01", ORIG_AUTH_GUID=a["AUTH_GUID"]))
    assert over["AUTH_RESP"] == "12"
    _, s = await post(http, url, form("CCE1", "30.00", **VISA))
    _, void = await post(http, url, form("CCEX", "15.00", ORIG_AUTH_GUID=c2["AUTH_GUID"]))
    assert void["AUTH_RESP"] == "00"

    await sim_control.close_batch()
    _, late_void = await post(http, url, form("CCEX", "30.00", ORIG_AUTH_GUID=s["AUTH_GUID"]))
    assert late_void["AUTH_RESP"] == "12" and "settled" in late_void["AUTH_RESP_TEXT"]
    _, refund = await post(http, url, form("CCE9", "30.00", ORIG_AUTH_GUID=s["AUTH_GUID"]))
    assert refund["AUTH_RESP"] == "00"
    [txn] = await sim_control.transactions(tran_nbr=int(s["TRAN_NBR"]))
    assert txn["settled"] is True and txn["refunded"] == "30.00"


async def test_triggers_and_token_sales(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    url = epx_sim.server_post_url
    _, declined = await post(http, url, form("CCE1", "1.05", **VISA))
    assert declined["AUTH_RESP"] == "05"
    _, stored = await post(http, url, form("CCE8", None, **VISA, ZIP_CODE="12345"))
    assert stored["AUTH_RESP"] == "00" and stored["AUTH_TRAN_IDENT"]
    token = {"ORIG_AUTH_GUID": stored["AUTH_GUID"], "CARD_ENT_METH": "Z"}
    _, ok = await post(http, url, form("CCE1", "12.00", **token))
    _, nsf = await post(http, url, form("CCE1", "1.20", **token, ACI_EXT="RB"))
    assert ok["AUTH_RESP"] == "00" and nsf["AUTH_RESP"] == "51"


async def test_response_formats_per_merchant_and_settings(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    await sim_control.add_merchant("9001", "900777", "2", "77", "kv-merchant-mac", response_format="kv")
    async with http.post(epx_sim.server_post_url, data=form("CCE1", "2.00", **VISA, MERCH_NBR="900777")) as r:
        assert (await r.text()).startswith("AUTH_GUID=")
    await sim_control.settings(response_format="detail")
    async with http.post(epx_sim.server_post_url, data=form("CCE1", "2.00", **VISA)) as r:
        assert (await r.text()).startswith("<DETAIL>")
    await sim_control.reset_test_state()
    async with http.post(epx_sim.server_post_url, data=form("CCE1", "2.00", **VISA)) as r:
        assert (await r.text()).startswith("<RESPONSE><FIELDS>")


async def test_duplicate_replay_setting(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    await sim_control.settings(duplicate_mode="replay")
    tn = next_tran_nbr()
    _, first = await post(http, epx_sim.server_post_url, form("CCE1", "3.00", tn, **VISA))
    _, again = await post(http, epx_sim.server_post_url, form("CCE1", "3.00", tn, **VISA))
    assert again == first
    assert [e["processed"] for e in await sim_control.ledger(tran_nbr=tn)] == [True, False]


async def test_xml_detail_request(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    tn = next_tran_nbr()
    body = (
        f'<DETAIL cust_nbr="{KEY["CUST_NBR"]}" merch_nbr="{KEY["MERCH_NBR"]}" dba_nbr="2" terminal_nbr="77">'
        f"<TRAN_TYPE>CCE1</TRAN_TYPE><AMOUNT>4.00</AMOUNT><TRAN_NBR>{tn}</TRAN_NBR><BATCH_ID>20260302</BATCH_ID>"
        "<ACCOUNT_NBR>5454545454545454</ACCOUNT_NBR><EXP_DATE>3012</EXP_DATE></DETAIL>"
    )
    async with http.post(
        epx_sim.server_post_url, data=body, headers={"Content-Type": "application/xml"}
    ) as r:
        text = await r.text()
    assert '<FIELD KEY="AUTH_RESP">00</FIELD>' in text and '<FIELD KEY="AUTH_CARD_TYPE">M</FIELD>' in text


async def test_ach_flow_and_return_feed(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    url = epx_sim.server_post_url
    await sim_control.clock(now="2026-11-25T15:00:00Z")
    _, pre = await post(http, url, form("CKC0", "0.00", **{**ACH, "ACCOUNT_NBR": "900000003"}))
    assert pre["AUTH_RESP"] == "00" and pre["AUTH_RESP_TEXT"] == "ACH ACCEPTED"
    _, storage = await post(http, url, form("CKC8", None, ORIG_AUTH_GUID=pre["AUTH_GUID"], CARD_ENT_METH="Z"))
    _, debit = await post(
        http,
        url,
        form("CKC2", "40.00", ORIG_AUTH_GUID=storage["AUTH_GUID"], CARD_ENT_METH="Z", STD_ENTRY_CLASS="WEB"),
    )
    assert debit["AUTH_RESP"] == "00"
    feed = epx_sim.reporting_url + "/reporting/ach/returns"
    assert (await get_json(http, feed, merchant="900300", fromDate="2026-11-25"))["data"]["returns"] == []
    # settles Friday 27 (Thanksgiving on 26), returns 2 banking days later: Tuesday 1 December
    await sim_control.clock(now="2026-12-01T09:00:00Z")
    returns = (await get_json(http, feed, merchant="900300", fromDate="2026-11-25"))["data"]["returns"]
    mine = {
        r["tranNbr"]: r for r in returns if r["tranNbr"] in (int(pre["TRAN_NBR"]), int(debit["TRAN_NBR"]))
    }
    assert {r["returnCode"] for r in mine.values()} == {"R03"} and len(mine) == 2
    row = mine[int(debit["TRAN_NBR"])]
    assert row["amount"] == "40.00" and row["returnDate"] == "2026-12-01" and row["accountLast4"] == "0003"
    injected = await sim_control.inject_ach_return(int(debit["TRAN_NBR"]), "C01", merchant="900300")
    assert injected["changeCode"] == "C01" and injected["returnCode"] is None
