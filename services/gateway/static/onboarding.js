/* The onboarding page: a snapshot, then live server-sent events; every user value goes in via textContent. */
(function () {
  "use strict";

  var app = document.getElementById("app");
  if (!app) return;
  var API = "/marketplace/api";
  var token = app.dataset.token || "";
  var yclientsUrl = app.dataset.yclientsUrl || "https://yclients.com/";
  var redirectAfterS = parseInt(app.dataset.redirectAfter, 10) || 10;
  var STALL_MS = 25000; // no QR this long after a request: offer to ask again
  var EVENTS = [
    "registration.completed", "registration.enriched",
    "whatsapp.qr_issued", "whatsapp.pairing_code_issued", "whatsapp.pairing_expired",
    "whatsapp.connected", "whatsapp.disconnected", "whatsapp.logged_out",
    "activation.completed", "activation.failed", "integration.status_changed"
  ];

  var salons = new Map();   // salon_id -> state from the server
  var ui = new Map();       // salon_id -> page-only state (busy, error, requests, form)
  var clockOffset = 0;      // server time minus local time, ms
  var expired = false;
  var source = null;
  var reconnectDelay = 1000;
  var redirectAt = null;
  var bannerTimer = null;

  // ---- small helpers -----------------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else if (key === "onsubmit") node.addEventListener("submit", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    });
    (children || []).forEach(function (child) {
      if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function now() { return Date.now() + clockOffset; }

  function secondsLeft(iso) {
    if (!iso) return null;
    return Math.max(0, Math.round((Date.parse(iso) - now()) / 1000));
  }

  function mmss(total) {
    var m = Math.floor(total / 60), s = total % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function formatPhone(phone) {
    var d = String(phone || "").replace(/\D/g, "");
    if (d.length === 11 && d.charAt(0) === "7") {
      return "+7 " + d.slice(1, 4) + " " + d.slice(4, 7) + "-" + d.slice(7, 9) + "-" + d.slice(9);
    }
    return d ? "+" + d : "";
  }

  function uiOf(id) {
    if (!ui.has(id)) ui.set(id, { busy: false, error: "", autoRequested: false, waitingSince: 0, stallShown: false, formOpen: false });
    return ui.get(id);
  }

  function card(id) { return document.querySelector('.salon[data-salon-id="' + id + '"]'); }
  function part(id, role) { var c = card(id); return c ? c.querySelector('[data-role="' + role + '"]') : null; }

  // Rebuild a container only when what it shows changed (keeps inputs, focus and the QR image stable).
  function setContent(container, key, build) {
    if (!container || container.dataset.key === key) return;
    container.dataset.key = key;
    while (container.firstChild) container.removeChild(container.firstChild);
    var nodes = build() || [];
    nodes.forEach(function (n) { if (n) container.appendChild(n); });
  }

  // ---- talking to the gateway ------------------------------------------------------------------------

  function api(method, path, body) {
    var init = {
      method: method,
      cache: "no-store",
      credentials: "same-origin",
      headers: { "Accept": "application/json", "Authorization": "Bearer " + token }
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (res) {
      return res.json().catch(function () { return null; }).then(function (data) {
        if (res.status === 401) showExpired();
        return { ok: res.ok, status: res.status, data: data };
      });
    }, function () {
      return { ok: false, status: 0, data: null };
    });
  }

  function errorText(result) {
    if (result.status === 0) return "Нет связи с сервером. Проверьте интернет и попробуйте ещё раз.";
    if (result.status === 429) return "Слишком много запросов подряд. Подождите немного и попробуйте ещё раз.";
    if (result.status >= 500 || result.status === 404 || result.status === 405) {
      return "Сервис временно недоступен. Попробуйте ещё раз через минуту.";
    }
    // Our API explains refusals in Russian (the phone number, a salon the link does not cover ...).
    var d = result.data || {};
    if (typeof d.message === "string") return d.message;
    if (typeof d.detail === "string") return d.detail;
    return "Не получилось. Попробуйте ещё раз.";
  }

  function act(id, request, onOk) {
    var u = uiOf(id);
    if (u.busy || expired) return;
    u.busy = true;
    u.error = "";
    render(id);
    request().then(function (result) {
      u.busy = false;
      if (result.ok) {
        if (onOk) onOk(result);
      } else if (result.status !== 401) {
        u.error = errorText(result);
      }
      render(id);
    });
  }

  function requestQr(id) {
    act(id, function () { return api("POST", API + "/qr", { salon_id: id }); }, function () {
      var u = uiOf(id);
      u.waitingSince = Date.now();
      u.stallShown = false;
      u.formOpen = false;
      u.pendingMode = "qr";
      var s = salons.get(id);
      // Until the first QR arrives the page shows "preparing", not the expired code.
      if (s && s.whatsapp && s.whatsapp.state !== "pairing") s.whatsapp.state = "new";
      if (s && s.whatsapp) { s.whatsapp.qr = null; s.whatsapp.pairing_code = null; }
    });
  }

  function requestCode(id, phone) {
    act(id, function () { return api("POST", API + "/pairing-code", { salon_id: id, phone: phone }); }, function () {
      var u = uiOf(id);
      u.waitingSince = Date.now();
      u.stallShown = false;
      u.pendingMode = "phone";
      var s = salons.get(id);
      if (s && s.whatsapp) { s.whatsapp.state = "new"; s.whatsapp.qr = null; s.whatsapp.pairing_code = null; }
    });
  }

  function retryActivation(id) {
    act(id, function () { return api("POST", "/marketplace/activate", { token: token, salon_id: id }); }, function () {
      var s = salons.get(id);
      if (s) {
        s.integration_status = "activating";
        s.activation = { status: "activating", error: null };
      }
    });
  }

  // ---- state -----------------------------------------------------------------------------------------

  function applySnapshot(snapshot) {
    if (!snapshot || !snapshot.salons) return;
    if (snapshot.server_time) clockOffset = Date.parse(snapshot.server_time) - Date.now();
    snapshot.salons.forEach(function (s) { salons.set(s.salon_id, s); });
    salons.forEach(function (_, id) { render(id); });
  }

  function applyEvent(name, d) {
    var s = salons.get(d.salon_id);
    if (!s) return;
    var wa = s.whatsapp || (s.whatsapp = { state: null });
    switch (name) {
      case "registration.completed":
        s.registered = true;
        s.title = d.title;
        s.integration_status = d.integration_status;
        break;
      case "registration.enriched":
        s.title = d.title;
        break;
      case "whatsapp.qr_issued":
        // An event queued before the snapshot may be older than what the page already shows.
        if (wa.qr && wa.qr.attempt_id === d.qr.attempt_id && d.qr.seq !== null && wa.qr.seq > d.qr.seq) return;
        wa.state = "pairing";
        wa.qr = d.qr;
        wa.pairing_code = null;
        break;
      case "whatsapp.pairing_code_issued":
        wa.state = "pairing";
        wa.pairing_code = d.pairing_code;
        wa.qr = null;
        break;
      case "whatsapp.pairing_expired":
        wa.state = "pairing_expired";
        wa.qr = null;
        wa.pairing_code = null;
        break;
      case "whatsapp.connected":
        wa.state = "connected";
        wa.phone = d.phone || wa.phone;
        wa.qr = null;
        wa.pairing_code = null;
        break;
      case "whatsapp.disconnected":
        wa.state = "disconnected";
        wa.retrying = !!d.retrying;
        break;
      case "whatsapp.logged_out":
        wa.state = "logged_out";
        wa.qr = null;
        wa.pairing_code = null;
        break;
      case "activation.completed":
        s.integration_status = "active";
        s.activation = { status: "active", error: null };
        break;
      case "activation.failed":
        s.integration_status = "activation_failed";
        s.activation = { status: "failed", error: d.error };
        break;
      case "integration.status_changed":
        s.integration_status = d.integration_status;
        s.activation = { status: d.activation_status, error: null };
        break;
      default:
        return;
    }
    render(d.salon_id);
  }

  // ---- what each state looks like --------------------------------------------------------------------

  function button(label, onclick, primary, busy) {
    return el("button", { type: "button", class: "btn " + (primary ? "btn-primary" : "btn-secondary"),
      onclick: onclick, disabled: busy }, [busy ? "Отправляем…" : label]);
  }

  function link(label, href, primary) {
    return el("a", { class: "btn " + (primary ? "btn-primary" : "btn-secondary"), href: href }, [label]);
  }

  function isDone(s) {
    return s.registered && s.integration_status === "active" && (!s.whatsapp || s.whatsapp.state !== "logged_out");
  }

  function view(s) {
    var id = s.salon_id;
    var u = uiOf(id);
    var wa = s.whatsapp || { state: null };
    var st = s.integration_status;
    var phone = formatPhone(wa.phone);
    var newQr = function (label) {
      return { label: label || "Получить новый QR-код", primary: true, run: function () { requestQr(id); } };
    };

    if (!s.registered) {
      return { badge: ["Регистрируем", "wait"], steps: ["current", "todo", "todo"], icon: "spin",
        heading: "Регистрируем салон…", text: "Обычно это занимает несколько секунд." };
    }
    if (st === "uninstalled") {
      return { badge: ["Отключено", "off"], steps: ["done", "todo", "todo"], icon: "off",
        heading: "Приложение отключено в YClients",
        text: "Интеграция остановлена, WhatsApp отвязан. Чтобы подключить снова, откройте приложение в маркетплейсе YClients и нажмите «Подключить».",
        links: [["Открыть YClients", yclientsUrl]] };
    }
    if (st === "frozen") {
      return { badge: ["Приостановлено", "warn"], steps: ["done", "done", "error"], icon: "warn",
        heading: "Интеграция приостановлена",
        text: "Срок оплаты приложения в YClients истёк. WhatsApp остаётся привязан: после оплаты в YClients всё заработает само, сканировать QR-код заново не нужно.",
        links: [["Открыть YClients", yclientsUrl]] };
    }
    if (isDone(s)) {
      return { badge: ["Подключено", "ok"], steps: ["done", "done", "done"], icon: "ok", done: true,
        heading: "Готово! WhatsApp подключён",
        text: phone ? "AI-администратор работает с номером " + phone + ". Интеграция активна." : "Интеграция активна.",
        links: [["Вернуться в YClients", yclientsUrl]] };
    }
    if (st === "activation_failed") {
      return { badge: ["Ошибка активации", "err"], steps: ["done", "done", "error"], icon: "err",
        heading: "Не удалось активировать интеграцию",
        text: (s.activation && s.activation.error) || "YClients не подтвердил активацию. Попробуйте ещё раз.",
        actions: [{ label: "Повторить активацию", primary: true, run: function () { retryActivation(id); } }] };
    }
    if (wa.state === "connected" || st === "activating") {
      return { badge: ["Активируем", "wait"], steps: ["done", "done", "current"], icon: "spin",
        heading: "WhatsApp подключён" + (phone ? " (" + phone + ")" : "") + " — активируем интеграцию",
        text: "Сообщаем YClients, что всё готово. Обычно это несколько секунд; закрыть страницу уже можно." };
    }

    var stalled = u.waitingSince > 0 && Date.now() - u.waitingSince > STALL_MS;
    var pairingStep = ["done", "current", "todo"];
    switch (wa.state) {
      case "pairing":
        if (wa.qr) {
          return { badge: ["Ждём сканирования", "wait"], steps: pairingStep, icon: null, qr: wa.qr, alt: "phone",
            heading: "Отсканируйте QR-код в WhatsApp", text: "" };
        }
        if (wa.pairing_code) {
          return { badge: ["Ждём ввода кода", "wait"], steps: pairingStep, icon: null, code: wa.pairing_code, alt: "qr",
            heading: "Введите код в WhatsApp на телефоне", text: "" };
        }
        break;
      case "pairing_expired":
        return { badge: ["Время вышло", "warn"], steps: pairingStep, icon: "warn", alt: "phone",
          heading: "Время QR-кода истекло",
          text: "WhatsApp выдаёт несколько кодов подряд, и они закончились. Запросите новый — это займёт пару секунд.",
          actions: [newQr()] };
      case "connecting":
        return { badge: ["Подключаемся", "wait"], steps: pairingStep, icon: "spin",
          heading: "Подключаемся к WhatsApp…",
          text: "Код принят, WhatsApp завершает привязку. Не закрывайте WhatsApp на телефоне." };
      case "disconnected":
        if (wa.retrying === false) {
          return { badge: ["Нет связи", "err"], steps: pairingStep, icon: "err",
            heading: "Связь с WhatsApp прервалась",
            text: "Восстановить соединение автоматически не получилось. Привяжите WhatsApp заново.",
            actions: [newQr()], alt: "phone" };
        }
        return { badge: ["Переподключаемся", "warn"], steps: pairingStep, icon: "spin",
          heading: "Связь с WhatsApp прервалась — переподключаемся",
          text: "Ничего делать не нужно: мы восстановим соединение сами." };
      case "engine_unreachable":
        return { badge: ["Повторяем", "warn"], steps: pairingStep, icon: "spin", preparing: true,
          heading: "Сервер WhatsApp сейчас недоступен",
          text: "Мы повторяем попытку автоматически — QR-код появится здесь, как только WhatsApp ответит.",
          actions: stalled ? [newQr("Попробовать ещё раз")] : [] };
      case "paused":
        return { badge: ["Приостановлено", "warn"], steps: pairingStep, icon: "warn",
          heading: "Сессия WhatsApp приостановлена",
          text: "Подключение WhatsApp поставлено на паузу. Чтобы продолжить, привяжите WhatsApp заново.",
          actions: [newQr("Получить QR-код")] };
      case "logged_out":
        return { badge: ["WhatsApp отвязан", "warn"], steps: pairingStep, icon: "warn", alt: "phone",
          heading: "WhatsApp отвязан",
          text: "Устройство удалено в WhatsApp на телефоне. Чтобы продолжить, привяжите WhatsApp заново.",
          actions: [newQr()] };
      default:
        break;
    }
    // No session yet, a new one, or pairing without a code: the QR (or the code asked for) is on its way.
    if (u.pendingMode === "phone") {
      return { badge: ["Получаем код", "wait"], steps: pairingStep, icon: "spin", alt: "phone", preparing: true,
        heading: "Получаем код для привязки по номеру…",
        text: "Через несколько секунд здесь появится код из 8 символов.",
        actions: stalled ? [newQr("Показать QR-код")] : [] };
    }
    return { badge: ["Готовим QR-код", "wait"], steps: pairingStep, icon: "spin", alt: "phone", preparing: true,
      heading: "Готовим QR-код…", text: "Через несколько секунд здесь появится QR-код для WhatsApp.",
      actions: stalled ? [newQr("Запросить QR-код ещё раз")] : [] };
  }

  // ---- rendering -------------------------------------------------------------------------------------

  var ICONS = { ok: "✓", warn: "!", err: "!", off: "–", spin: "" };

  function renderQr(qr) {
    var frame = el("div", { class: "qr-frame", "data-role": "qr", "data-payload": qr.payload, "data-seq": qr.seq });
    if (qr.svg) {
      var doc = new DOMParser().parseFromString(qr.svg, "image/svg+xml");
      if (!doc.getElementsByTagName("parsererror").length) {
        var svg = document.importNode(doc.documentElement, true);
        svg.setAttribute("role", "img");
        svg.setAttribute("aria-label", "QR-код для привязки WhatsApp");
        frame.appendChild(svg);
      }
    }
    var meta = el("div", { class: "qr-meta" }, [
      qr.seq && qr.max ? el("span", {}, ["Код ", el("strong", { text: String(qr.seq) }), " из ", el("strong", { text: String(qr.max) })]) : null,
      el("span", { class: "countdown", "data-expires-at": qr.expires_at,
        "data-kind": qr.seq && qr.max && qr.seq >= qr.max ? "last-qr" : "qr" })
    ]);
    var howto = el("ol", { class: "howto" }, [
      el("li", {}, ["Откройте ", el("b", { text: "WhatsApp" }), " на телефоне салона"]),
      el("li", {}, [el("b", { text: "Настройки → Связанные устройства → Привязка устройства" })]),
      el("li", {}, ["Наведите камеру на этот QR-код"])
    ]);
    return [frame, meta, howto];
  }

  function renderCode(code) {
    return [
      el("div", { class: "code", "data-role": "pairing-code", text: code.display || code.code }),
      el("div", { class: "qr-meta" }, [el("span", { class: "countdown", "data-expires-at": code.expires_at, "data-kind": "code" })]),
      el("ol", { class: "howto" }, [
        el("li", {}, ["В WhatsApp откройте ", el("b", { text: "Настройки → Связанные устройства → Привязка устройства" })]),
        el("li", {}, ["Нажмите ", el("b", { text: "«Привязать по номеру телефона»" })]),
        el("li", {}, ["Введите этот код"])
      ])
    ];
  }

  function renderAlt(id, kind) {
    var u = uiOf(id);
    if (kind === "qr") {
      return [el("button", { type: "button", class: "alt-toggle", onclick: function () { requestQr(id); } },
        ["Показать QR-код вместо кода"])];
    }
    if (!u.formOpen) {
      return [el("button", { type: "button", class: "alt-toggle", onclick: function () {
        u.formOpen = true; render(id);
        var input = card(id).querySelector('input[name="phone"]');
        if (input) input.focus();
      } }, ["Не получается отсканировать? Привязать по номеру телефона"])];
    }
    var input = el("input", { type: "tel", name: "phone", id: "phone-" + id, inputmode: "tel",
      autocomplete: "tel", placeholder: "+7 900 123-45-67", required: true, maxlength: 32 });
    var form = el("form", { class: "phone-form", novalidate: true, onsubmit: function (e) {
      e.preventDefault();
      requestCode(id, input.value);
    } }, [
      el("label", { for: "phone-" + id, text: "Номер WhatsApp салона с кодом страны — пришлём код для ввода в WhatsApp" }),
      input,
      el("button", { type: "submit", class: "btn btn-primary" }, ["Получить код"])
    ]);
    return [form];
  }

  function render(id) {
    var s = salons.get(id);
    var c = card(id);
    if (!s || !c) return;
    var u = uiOf(id);
    var v = view(s);
    if (v.preparing) {
      if (!u.waitingSince) u.waitingSince = Date.now();
    } else {
      u.waitingSince = 0;
      u.stallShown = false;
      u.pendingMode = "";
    }

    var title = part(id, "title");
    title.textContent = s.title || "Салон " + id;

    var badge = part(id, "badge");
    badge.textContent = v.badge[0];
    badge.className = "badge badge-" + v.badge[1];

    var steps = c.querySelectorAll(".steps li");
    for (var i = 0; i < steps.length; i++) steps[i].className = "is-" + v.steps[i];

    c.dataset.state = (s.whatsapp && s.whatsapp.state) || "none";
    c.dataset.integration = s.integration_status || "unknown";
    c.dataset.done = v.done ? "true" : "false";

    setContent(part(id, "status"), [v.icon, v.heading, v.text].join("|"), function () {
      var nodes = [];
      if (v.icon !== null) nodes.push(el("span", { class: "status-icon status-icon-" + v.icon, "aria-hidden": "true", text: ICONS[v.icon] || "" }));
      nodes.push(el("div", {}, [
        el("p", { class: "status-heading", "data-role": "heading", text: v.heading }),
        v.text ? el("p", { class: "status-text", text: v.text }) : null
      ]));
      return nodes;
    });

    var pairing = part(id, "pairing");
    if (v.qr) setContent(pairing, "qr|" + v.qr.payload, function () { return renderQr(v.qr); });
    else if (v.code) setContent(pairing, "code|" + v.code.code, function () { return renderCode(v.code); });
    else setContent(pairing, "", function () { return []; });
    var countdowns = pairing.querySelectorAll(".countdown[data-expires-at]");
    for (var k = 0; k < countdowns.length; k++) showCountdown(countdowns[k]);

    var alt = part(id, "alt");
    alt.hidden = !v.alt || expired;
    setContent(alt, v.alt ? v.alt + "|" + u.formOpen : "", function () { return v.alt ? renderAlt(id, v.alt) : []; });
    var submit = alt.querySelector('button[type="submit"]');
    if (submit) { submit.disabled = u.busy; submit.textContent = u.busy ? "Отправляем…" : "Получить код"; }

    var err = part(id, "error");
    err.textContent = u.error;
    err.hidden = !u.error;

    var actions = (v.actions || []);
    var links = (v.links || []);
    setContent(part(id, "actions"), JSON.stringify([actions.map(function (a) { return a.label; }), links, u.busy, expired]), function () {
      if (expired) return [];
      return actions.map(function (a) { return button(a.label, a.run, a.primary, u.busy); })
        .concat(links.map(function (l, i) { return link(l[0], l[1], i === 0 && !actions.length); }));
    });

    // Nothing yet and nobody asked: ask for the first QR, so the admin sees it without clicking.
    if (s.registered && s.integration_status === "pending_whatsapp" && !u.autoRequested && !expired &&
        (!s.whatsapp || s.whatsapp.state === null || s.whatsapp.state === "logged_out")) {
      u.autoRequested = true;
      requestQr(id);
    }
    updateRedirect();
  }

  // ---- countdowns, redirect, banner ------------------------------------------------------------------

  function showCountdown(node) {
    var left = secondsLeft(node.getAttribute("data-expires-at"));
    if (left === null) return;
    var kind = node.getAttribute("data-kind");
    if (left > 0) node.textContent = (kind === "qr" ? "обновится через " : "действует ещё ") + mmss(left);
    else node.textContent = kind === "qr" ? "обновляем код…" : "время кода истекло";
    var pairing = node.closest(".pairing");
    var frame = pairing && pairing.querySelector(".qr-frame");
    if (frame) frame.classList.toggle("is-stale", left === 0);
  }

  function tick() {
    var nodes = document.querySelectorAll(".countdown[data-expires-at]");
    for (var i = 0; i < nodes.length; i++) showCountdown(nodes[i]);
    salons.forEach(function (s, id) {
      var u = uiOf(id);
      if (u.waitingSince && Date.now() - u.waitingSince > STALL_MS && !u.stallShown) { u.stallShown = true; render(id); }
    });
    if (redirectAt !== null) {
      var wait = Math.max(0, Math.ceil((redirectAt - Date.now()) / 1000));
      if (wait === 0) { redirectAt = null; window.location.assign(yclientsUrl); return; }
      showBanner("ok", "Всё готово! Через " + wait + " с вернём вас в YClients.", "Вернуться сейчас", yclientsUrl);
    }
  }

  function updateRedirect() {
    var all = salons.size > 0;
    salons.forEach(function (s) { if (!isDone(s)) all = false; });
    if (all && redirectAt === null && !expired) redirectAt = Date.now() + redirectAfterS * 1000;
    if (!all && redirectAt !== null) { redirectAt = null; hideBanner(); }
  }

  function showBanner(kind, text, linkText, href) {
    var banner = document.getElementById("banner");
    while (banner.firstChild) banner.removeChild(banner.firstChild);
    banner.className = "banner" + (kind ? " banner-" + kind : "");
    banner.appendChild(document.createTextNode(text + " "));
    if (linkText) banner.appendChild(el("a", { href: href, text: linkText }));
    banner.hidden = false;
  }

  function hideBanner() {
    var banner = document.getElementById("banner");
    if (!expired && redirectAt === null) banner.hidden = true;
  }

  function showExpired() {
    if (expired) return;
    expired = true;
    redirectAt = null;
    if (source) source.close();
    showBanner("error", "Ссылка устарела. Откройте приложение в маркетплейсе YClients и нажмите «Подключить» ещё раз.",
      "Открыть YClients", yclientsUrl);
    salons.forEach(function (_, id) { render(id); });
  }

  // ---- live updates ----------------------------------------------------------------------------------

  function connect() {
    if (expired) return;
    if (!window.EventSource) { poll(); return; }
    if (source) source.close();
    source = new EventSource(API + "/events?token=" + encodeURIComponent(token));
    source.addEventListener("open", function () {
      reconnectDelay = 1000;
      clearTimeout(bannerTimer);
      hideBanner();
    });
    source.addEventListener("snapshot", function (e) { applySnapshot(JSON.parse(e.data)); });
    EVENTS.forEach(function (name) {
      source.addEventListener(name, function (e) { applyEvent(name, JSON.parse(e.data)); });
    });
    source.addEventListener("expired", function () { showExpired(); });
    source.addEventListener("error", function () {
      if (expired) return;
      // Say so only if the connection does not come back quickly (EventSource retries by itself).
      clearTimeout(bannerTimer);
      bannerTimer = setTimeout(function () {
        if (redirectAt === null) showBanner("", "Связь с сервером прервалась — переподключаемся…");
      }, 4000);
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (expired link, too many tabs, maintenance): find out, then retry.
        api("GET", API + "/state").then(function (result) {
          if (result.status === 401) return;
          if (result.ok) applySnapshot(result.data);
          setTimeout(connect, reconnectDelay);
          reconnectDelay = Math.min(reconnectDelay * 2, 30000);
        });
      }
    });
  }

  function poll() {
    api("GET", API + "/state").then(function (result) {
      if (result.ok) applySnapshot(result.data);
      if (!expired) setTimeout(poll, 3000);
    });
  }

  // ---- start -----------------------------------------------------------------------------------------

  var initial = null;
  try {
    initial = JSON.parse(document.getElementById("initial-state").textContent);
  } catch (e) {
    initial = null;
  }
  if (initial) applySnapshot(initial);
  setInterval(tick, 1000);
  tick();
  connect();
})();
