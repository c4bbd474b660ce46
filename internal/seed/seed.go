// Package seed holds the three example requests of the Batch Send
// Messages API description, as JSON, for tests across the module.
package seed

// Broadcast is "Basic batch send": one announcement to three users.
const Broadcast = `{
  "messageType": "text",
  "message": "系統公告:明天將進行例行維護",
  "push": true,
  "sender": "system",
  "paras": [
    { "receiver": "user-a" },
    { "receiver": "user-b" },
    { "receiver": "user-c" }
  ]
}`

// Template is "Using template variables".
const Template = `{
  "messageType": "text",
  "message": "Hi $name$,您的訂單 $orderId$ 已出貨!",
  "push": true,
  "sender": "system",
  "paras": [
    {
      "receiver": "user-a",
      "$name$": "Alice",
      "$orderId$": "ORD-001"
    },
    {
      "receiver": "user-b",
      "$name$": "Bob",
      "$orderId$": "ORD-002"
    }
  ]
}`

// Rooms is "Send to specific rooms"; it does not ask for push.
const Rooms = `{
  "messageType": "text",
  "message": "活動提醒:明天 14:00 開始",
  "sender": "system",
  "paras": [
    { "room": "room-001" },
    { "room": "room-002" },
    { "room": "room-003" }
  ]
}`
