// Chat page of the signalr-rs example.
//
// Plain browser script, no build step. It uses the official SignalR browser bundles, loaded
// before it as globals: `signalR` (/lib/signalr.min.js) and `signalR.protocols.msgpack`
// (/lib/signalr-protocol-msgpack.min.js).
//
// Hub: /chat. Server methods: Send(name, message), JoinGroup(group), LeaveGroup(group),
// SendToGroup(group, name, message), SendToUser(user, name, message).
// Client method: broadcastMessage(name, message).
//
// The transport select forces WebSockets, Server-Sent Events or long polling; "Automatic"
// lets the client take the first transport the server offers that works.
//
// Every piece of text from the network or the user is inserted with textContent, never as HTML.

(function () {
  'use strict';

  const MAX_LINES = 500;

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'),
    connectForm: $('connect-form'),
    name: $('name'),
    user: $('user'),
    protocol: $('protocol'),
    transport: $('transport'),
    connect: $('connect'),
    messages: $('messages'),
    messageForm: $('message-form'),
    message: $('message'),
    groupForm: $('group-form'),
    group: $('group'),
    join: $('join'),
    leave: $('leave'),
    sendGroup: $('send-group'),
    userForm: $('user-form'),
    toUser: $('to-user'),
  };

  /** The current HubConnection, or null. Callbacks of an older connection are ignored. */
  let connection = null;

  // --- rendering -----------------------------------------------------------------------

  /** state: 'connecting' | 'connected' | 'reconnecting' | 'disconnected'. */
  function setStatus(state, detail) {
    ui.status.dataset.state = state;
    ui.status.textContent = detail ? `${state}: ${detail}` : state;
    ui.status.title = ui.status.textContent;

    const idle = state === 'disconnected';
    ui.name.disabled = !idle;
    ui.user.disabled = !idle;
    ui.protocol.disabled = !idle;
    ui.transport.disabled = !idle;
    ui.connect.textContent = idle ? 'Connect' : 'Disconnect';
    for (const button of document.querySelectorAll('[data-needs-connection]')) {
      button.disabled = state !== 'connected';
    }
  }

  /** Appends one line to the message list. kind: 'chat' | 'system' | 'error'. */
  function addLine(kind, from, text) {
    const list = ui.messages;
    const stickToBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 48;

    const li = document.createElement('li');
    li.className = kind;

    const now = new Date();
    const time = document.createElement('time');
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    li.append(time);

    if (from !== undefined) {
      const name = document.createElement('strong');
      name.className = 'name';
      name.textContent = String(from);
      li.append(name);
    }

    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = String(text);
    li.append(body);

    list.append(li);
    while (list.childElementCount > MAX_LINES) list.firstElementChild.remove();
    if (stickToBottom) list.scrollTop = list.scrollHeight;
  }

  const notice = (text) => addLine('system', undefined, text);
  const problem = (text) => addLine('error', undefined, text);

  // --- connection ----------------------------------------------------------------------

  function hubUrl() {
    const url = new URL('/chat', window.location.href);
    const user = ui.user.value.trim();
    if (user) url.searchParams.set('user', user);
    return url.toString();
  }

  async function connect() {
    const name = ui.name.value.trim();
    if (!name) {
      problem('Pick a name first.');
      ui.name.focus();
      return;
    }
    const useMessagePack = ui.protocol.value === 'messagepack';
    // 'auto' lets the client pick the first transport the server offers that works.
    const transport = ui.transport.value;
    const options = transport === 'auto' ? {} : { transport: signalR.HttpTransportType[transport] };

    const builder = new signalR.HubConnectionBuilder()
      .withUrl(hubUrl(), options)
      .withAutomaticReconnect()
      .configureLogging(signalR.LogLevel.Warning);
    if (useMessagePack) {
      builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
    }
    const conn = builder.build();
    connection = conn;

    conn.on('broadcastMessage', (from, message) => {
      if (conn === connection) addLine('chat', from, message);
    });
    conn.onreconnecting((error) => {
      if (conn === connection) setStatus('reconnecting', error && error.message);
    });
    conn.onreconnected(() => {
      if (conn !== connection) return;
      setStatus('connected');
      notice('Reconnected. This is a new connection: join your groups again.');
    });
    conn.onclose((error) => {
      if (conn !== connection) return;
      connection = null;
      setStatus('disconnected', error && error.message);
      if (error) problem(`Disconnected: ${error.message}`);
    });

    setStatus('connecting');
    try {
      await conn.start();
    } catch (error) {
      if (conn === connection) {
        connection = null;
        setStatus('disconnected', error.message);
        problem(`Could not connect: ${error.message}`);
      }
      return;
    }
    if (conn === connection) {
      setStatus('connected');
      const over = transport === 'auto' ? '' : ` over ${transport}`;
      notice(`Connected as ${name} (${useMessagePack ? 'MessagePack' : 'JSON'}${over}).`);
    }
  }

  async function disconnect() {
    const conn = connection;
    connection = null;
    setStatus('disconnected');
    if (conn) await conn.stop();
  }

  /** Invokes a hub method on the current connection; reports a failure in the list. */
  async function call(method, ...args) {
    if (!connection) {
      problem('Not connected.');
      return false;
    }
    try {
      await connection.invoke(method, ...args);
      return true;
    } catch (error) {
      problem(`${method} failed: ${error.message}`);
      return false;
    }
  }

  /** The trimmed value of `input`, or null (and focus on it) when it is empty. */
  function required(input) {
    const value = input.value.trim();
    if (!value) {
      input.focus();
      return null;
    }
    return value;
  }

  /** The message to send, or null (and focus on the message box) when it is empty. */
  function messageText() {
    if (!ui.message.value.trim()) {
      ui.message.focus();
      return null;
    }
    return ui.message.value;
  }

  async function sendWith(method, ...target) {
    const text = messageText();
    if (text === null) return;
    if (await call(method, ...target, ui.name.value.trim(), text)) {
      ui.message.value = '';
      ui.message.focus();
    }
  }

  // --- wiring --------------------------------------------------------------------------

  ui.connectForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (ui.status.dataset.state === 'disconnected') connect();
    else disconnect();
  });

  ui.messageForm.addEventListener('submit', (event) => {
    event.preventDefault();
    sendWith('Send');
  });

  // Enter in the group box joins the group.
  ui.groupForm.addEventListener('submit', (event) => {
    event.preventDefault();
    ui.join.click();
  });

  ui.join.addEventListener('click', async () => {
    const group = required(ui.group);
    if (group !== null && (await call('JoinGroup', group))) notice(`Joined group “${group}”.`);
  });

  ui.leave.addEventListener('click', async () => {
    const group = required(ui.group);
    if (group !== null && (await call('LeaveGroup', group))) notice(`Left group “${group}”.`);
  });

  ui.sendGroup.addEventListener('click', () => {
    const group = required(ui.group);
    if (group !== null) sendWith('SendToGroup', group);
  });

  ui.userForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const user = required(ui.toUser);
    if (user !== null) sendWith('SendToUser', user);
  });

  // --- start ---------------------------------------------------------------------------

  setStatus('disconnected');
  if (typeof signalR === 'undefined') {
    ui.connect.disabled = true;
    setStatus('disconnected', 'could not load /lib/signalr.min.js');
  } else if (!signalR.protocols || !signalR.protocols.msgpack) {
    ui.protocol.value = 'json';
    ui.protocol.querySelector('option[value="messagepack"]').disabled = true;
    problem('Could not load /lib/signalr-protocol-msgpack.min.js: MessagePack is unavailable.');
  }
})();
