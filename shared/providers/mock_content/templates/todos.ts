export interface Todo {
  id: number;
  text: string;
  done: boolean;
}

export const initialTodos: Todo[] = %%todos%%;

export function addTodo(todos: Todo[], text: string): Todo[] {
  const trimmed = text.trim();
  if (!trimmed) return todos;
  const nextId = todos.reduce((max, todo) => Math.max(max, todo.id), 0) + 1;
  return [...todos, { id: nextId, text: trimmed, done: false }];
}

export function toggleTodo(todos: Todo[], id: number): Todo[] {
  return todos.map((todo) => (todo.id === id ? { ...todo, done: !todo.done } : todo));
}

export function removeTodo(todos: Todo[], id: number): Todo[] {
  return todos.filter((todo) => todo.id !== id);
}

export function remaining(todos: Todo[]): number {
  return todos.filter((todo) => !todo.done).length;
}
