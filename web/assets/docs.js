// BlueWave API docs page: renders /api/openapi.json with plain DOM calls. It writes text only
// through textContent (never innerHTML), loads nothing from another origin, and needs no
// network access beyond the server itself.
'use strict';

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function schemaText(schema) {
  if (!schema) return '';
  if (schema.$ref) return schema.$ref.replace('#/components/schemas/', '');
  return JSON.stringify(schema);
}

function table(headings, rows) {
  const t = el('table');
  const head = el('tr');
  headings.forEach((h) => head.appendChild(el('th', null, h)));
  t.appendChild(head);
  rows.forEach((cells) => {
    const row = el('tr');
    cells.forEach((c) => row.appendChild(el('td', null, c)));
    t.appendChild(row);
  });
  return t;
}

function contentRows(content) {
  return Object.entries(content || {}).map(([type, media]) => [type, schemaText(media.schema)]);
}

function renderOperation(path, method, op, index) {
  const box = el('section', 'operation');
  box.id = 'op-' + index;
  const title = el('h2');
  title.appendChild(el('span', 'method ' + method, method));
  title.appendChild(el('span', 'path', path));
  if (op.security && op.security.length) title.appendChild(el('span', 'lock', 'bearer token'));
  box.appendChild(title);
  if (op.summary) box.appendChild(el('p', null, op.summary));
  if (op.description && op.description !== op.summary) box.appendChild(el('p', null, op.description));
  const params = op.parameters || [];
  if (params.length) {
    box.appendChild(el('h3', null, 'Parameters'));
    box.appendChild(table(['name', 'in', 'required', 'type', 'description'],
      params.map((p) => [p.name, p.in, p.required ? 'yes' : 'no', schemaText(p.schema), p.description || ''])));
  }
  if (op.requestBody) {
    box.appendChild(el('h3', null, 'Request body'));
    box.appendChild(table(['content type', 'schema'], contentRows(op.requestBody.content)));
  }
  const responses = Object.entries(op.responses || {});
  if (responses.length) {
    box.appendChild(el('h3', null, 'Responses'));
    box.appendChild(table(['status', 'description', 'content'], responses.map(([status, r]) =>
      [status, r.description || '', contentRows(r.content).map((c) => c.join(': ')).join(', ')])));
  }
  return box;
}

function render(doc) {
  const info = doc.info || {};
  document.title = (info.title || 'API') + ' — docs';
  document.getElementById('title').textContent = info.title || 'API';
  document.getElementById('version').textContent =
    'Version ' + (info.version || '?') + ' · OpenAPI ' + (doc.openapi || '?');
  const main = document.getElementById('operations');
  main.textContent = '';
  const toc = el('ul');
  let index = 0;
  Object.keys(doc.paths || {}).sort().forEach((path) => {
    const item = doc.paths[path];
    METHODS.filter((m) => item[m]).forEach((method) => {
      const link = el('a', null, method.toUpperCase() + ' ' + path);
      link.href = '#op-' + index;
      const li = el('li');
      li.appendChild(link);
      toc.appendChild(li);
      main.appendChild(renderOperation(path, method, item[method], index));
      index += 1;
    });
  });
  document.getElementById('toc').appendChild(toc);
  const schemas = (doc.components && doc.components.schemas) || {};
  const section = document.getElementById('schemas');
  if (Object.keys(schemas).length) section.appendChild(el('h2', null, 'Schemas'));
  Object.keys(schemas).sort().forEach((name) => {
    section.appendChild(el('h3', null, name));
    section.appendChild(el('pre', null, JSON.stringify(schemas[name], null, 2)));
  });
}

function fail(message) {
  const status = document.getElementById('status');
  status.className = 'error';
  status.textContent = 'Could not load the API document: ' + message;
}

fetch('openapi.json', { credentials: 'same-origin' })
  .then((response) => (response.ok ? response.json() : Promise.reject(new Error('HTTP ' + response.status))))
  .then(render)
  .catch((error) => fail(error.message));
